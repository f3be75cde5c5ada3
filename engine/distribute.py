"""Where the model runs: a tf.distribute strategy and a precision policy.

TensorFlow's own machinery, not ours: `mirrored` copies the model to every local GPU
(tf.distribute.MirroredStrategy) and `multiworker` to every GPU of every machine named
in $TF_CONFIG (tf.distribute.MultiWorkerMirroredStrategy). Keras splits each global
batch across the replicas. Only the chief worker writes the run directory.
"""

from __future__ import annotations

import json
import os

from engine.errors import TrainingError

STRATEGIES = ("default", "mirrored", "multiworker")


def make_strategy(name: str):
    """The tf.distribute strategy called `name` (created once per process)."""
    from engine.tfsetup import tensorflow

    tf = tensorflow()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()  # every local GPU
        # No GPU: mirror over the logical CPUs (see engine.tfsetup.LOGICAL_CPUS_VARIABLE)
        return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    if name == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise TrainingError("--strategy multiworker needs TF_CONFIG describing the cluster "
                                "(see the README's two-machine recipe)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise TrainingError(f"unknown strategy {name!r}: choose one of {', '.join(STRATEGIES)}")


def is_chief() -> bool:
    """Whether this process writes checkpoints: the "chief" task if TF_CONFIG names one,
    else worker 0, else (no TF_CONFIG) this only process."""
    try:
        tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError:
        return True
    task = tf_config.get("task") or {}
    if "chief" in (tf_config.get("cluster") or {}):
        return task.get("type") == "chief"
    return task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0


def set_precision(mixed: bool) -> str:
    """Set Keras's global dtype policy; return a note when mixed precision cannot apply.

    float16 compute needs a GPU (bfloat16 on Ampere and newer is safer: no loss
    scaling); the softmax layer stays float32 either way (see engine.model).
    """
    from engine.tfsetup import keras, tensorflow

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
