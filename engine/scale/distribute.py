"""Where the model runs: a tf.distribute strategy and a precision policy.

TensorFlow's own machinery, not ours: `mirrored` copies the model to every local GPU
(tf.distribute.MirroredStrategy) and `multiworker` to every GPU of every machine named
in $TF_CONFIG (tf.distribute.MultiWorkerMirroredStrategy). Keras splits each global
batch across the replicas. Only the chief worker writes the run directory.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import threading

from engine.config import STRATEGIES
from engine.errors import TrainingError
from engine.tfsetup import keras, tensorflow


def make_strategy(name: str):
    """The tf.distribute strategy called `name` (created once per process)."""
    tf = tensorflow()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()  # every local GPU
        # No GPU: mirror over the logical CPUs (see engine.tfsetup.LOGICAL_CPUS_VARIABLE)
        return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    if name == "multiworker":
        return _multiworker_strategy()
    raise TrainingError(f"unknown strategy {name!r}: choose one of {', '.join(STRATEGIES)}")


@functools.cache
def _multiworker_strategy():
    # Once per process: the strategy sets up TensorFlow's collective ops for good.
    cluster_size()  # a clear error for a missing or malformed TF_CONFIG
    with _default_signals():
        return tensorflow().distribute.MultiWorkerMirroredStrategy()


@contextlib.contextmanager
def _default_signals():
    """The strategy waits inside TensorFlow until every worker in TF_CONFIG has joined, where
    no Python signal handler can run: let Ctrl-C, SIGTERM and SIGHUP end the process at once
    meanwhile (nothing is trained yet). Restoring the handlers afterwards also takes SIGTERM
    back from TensorFlow's coordination service, which claims it as the strategy starts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    saved = {name: signal.signal(name, signal.SIG_DFL) for name in names}
    try:
        yield
    finally:
        for name, handler in saved.items():
            signal.signal(name, handler if handler is not None else signal.SIG_DFL)


def _tf_config() -> tuple[dict, dict]:
    """($TF_CONFIG's cluster, its task), or a TrainingError saying what is wrong."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise TrainingError("--strategy multiworker needs TF_CONFIG describing the cluster "
                            "(see the README's two-machine recipe)")
    try:
        tf_config = json.loads(text)
        cluster, task = tf_config["cluster"], tf_config["task"]
        members = cluster.get(task["type"])
        if not isinstance(members, list) or not 0 <= int(task["index"]) < len(members):
            raise ValueError(f"task {task['type']} {task['index']} is not in the cluster")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise TrainingError(f"TF_CONFIG is not a valid cluster description ({error}); see the "
                            "README's two-machine recipe") from None
    return cluster, task


def cluster_size() -> int:
    """How many workers (chief included) TF_CONFIG names."""
    cluster, _ = _tf_config()
    return sum(len(cluster.get(kind) or []) for kind in ("chief", "worker"))


def is_chief() -> bool:
    """Whether this process writes the run directory: the "chief" task if TF_CONFIG names
    one, else worker 0 (MultiWorkerMirroredStrategy's own rule)."""
    cluster, task = _tf_config()
    if "chief" in cluster:
        return task["type"] == "chief"
    return task["type"] == "worker" and int(task["index"]) == 0


def worker_label() -> str:
    """"chief, 1 of 2 workers" or "worker 1, 1 of 2 workers", for progress lines."""
    _, task = _tf_config()
    role = "chief" if is_chief() else f"{task['type']} {task['index']}"
    return f"{role}, one of {cluster_size()} workers"


def set_precision(mixed: bool) -> str:
    """Set Keras's global dtype policy; return a note when mixed precision cannot apply.

    float16 compute needs a GPU (bfloat16 on Ampere and newer is safer: no loss
    scaling); the softmax layer stays float32 either way (see engine.modeling.model).
    """
    if not mixed:
        keras().mixed_precision.set_global_policy("float32")
        return ""
    gpus = tensorflow().config.list_physical_devices("GPU")
    if not gpus:
        keras().mixed_precision.set_global_policy("float32")
        return "--mixed-precision needs a GPU; training in float32 on the CPU"
    details = tensorflow().config.experimental.get_device_details(gpus[0])
    capability = details.get("compute_capability", (0, 0))
    policy = "mixed_bfloat16" if capability >= (8, 0) else "mixed_float16"
    keras().mixed_precision.set_global_policy(policy)
    return ""
