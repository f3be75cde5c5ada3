"""How much memory a model needs to train, estimated before it is built.

`--units 8192 --layers 16` is 8.3 billion parameters: 33 GB of weights before Adam's
moments. Started on a 24 GB machine it would only swap, or be killed minutes later with
nothing saved. So the settings are checked first, by arithmetic (no TensorFlow): on
the command line and before the app's screen opens with the smallest vocabulary a corpus
can have, again once the corpus is read, and against each GPU's memory once TensorFlow,
which alone can say how much that is, has started (check_gpu_memory).

The estimate counts, in float32 (4 bytes) unless said:
    weights            every parameter (engine.modeling.model.parameter_count)
    gradients          one per parameter
    optimizer moments  Adam keeps two per parameter, RMSprop one
    activations        what backpropagation keeps for one batch: per window, per time
                       step and per LSTM layer its gate pre-activations and activations
                       (8 x units), the cell state, its tanh and the output (3 x units);
                       the one-hot input; the softmax output (logits, probabilities and
                       their gradient) at every predicted position
    the sampler's copy the numpy sampler's float64 copy of the weights, made from the
                       training weights for every round of samples (engine/modeling/sampler.py)
It leaves out what does not grow with the model (TensorFlow itself, the corpus's ids),
so a model refused here cannot fit; one accepted may still be tight.
"""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass

from engine.compat import gpu_memory_bytes
from engine.config import SettingError, TrainConfig
from engine.errors import TrainingError
from engine.modeling.model import parameter_count  # (no TensorFlow: it is imported when a model is built)
from engine.tfsetup import tensorflow

FLOAT_BYTES = 4
SAMPLER_BYTES = 8         # the sampler computes in float64
MIN_VOCAB = 2             # before the corpus is read: no corpus has fewer characters
LSTM_VALUES_PER_UNIT = 11  # kept per time step and unit: 4 pre-activations, 4 gates, c, tanh(c), h
SOFTMAX_COPIES = 3        # logits, probabilities, their gradient
MOMENTS = {"adam": 2, "rmsprop": 1}


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int
    weights: int       # bytes
    gradients: int
    moments: int
    activations: int
    sampler: int
    optimizer: str

    @property
    def training(self) -> int:
        """What the training step holds where it runs (the machine's memory, or a GPU's)."""
        return self.weights + self.gradients + self.moments + self.activations

    @property
    def total(self) -> int:
        """Everything, when training runs in the machine's memory (no GPU)."""
        return self.training + self.sampler

    def parts(self) -> str:
        moments = "Adam's moments" if self.optimizer == "adam" else "RMSprop's moments"
        return (f"weights {gigabytes(self.weights)}, gradients {gigabytes(self.gradients)}, {moments} "
                f"{gigabytes(self.moments)}, activations for a batch {gigabytes(self.activations)}, the "
                f"sampler's copy {gigabytes(self.sampler)}")


def gigabytes(size: int) -> str:
    """223 GB, 33.3 GB, 25.8 MB, 372 KB: decimal units, as memory is sold, three figures."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            value = size / scale
            return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"
    return f"{size} bytes"


def estimate(vocab_size: int, config: TrainConfig) -> MemoryEstimate:
    """The memory a model of these settings needs to train (see the module docstring)."""
    parameters = parameter_count(vocab_size, config)
    windows, steps = config.batch_size, config.maxlen
    positions = windows * (steps if config.objective == "all" else 1)
    values = (windows * steps * config.layers * config.units * LSTM_VALUES_PER_UNIT
              + windows * steps * vocab_size + SOFTMAX_COPIES * positions * vocab_size)
    return MemoryEstimate(parameters=parameters, weights=FLOAT_BYTES * parameters,
                          gradients=FLOAT_BYTES * parameters,
                          moments=FLOAT_BYTES * parameters * MOMENTS.get(config.optimizer, 2),
                          activations=FLOAT_BYTES * values, sampler=SAMPLER_BYTES * parameters,
                          optimizer=config.optimizer)


def machine_memory() -> int | None:
    """This machine's memory in bytes (the lower of the physical memory and a cgroup's
    limit, as in a container), or None where it cannot be told."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, "rb") as file:
                limit = file.read(64).strip()
        except OSError:
            continue
        if limit.isdigit() and int(limit) > 0:
            total = min(total, int(limit)) if total else int(limit)
    return total if total and total > 0 else None


def gpu_likely() -> bool:
    """Whether TensorFlow will probably train on a GPU: an NVIDIA device node, unless
    CUDA_VISIBLE_DEVICES hides them all. A guess, made without TensorFlow; when it is
    wrong, the full check waits until TensorFlow has started (check_gpu_memory)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def _advice(needed: MemoryEstimate) -> str:
    if needed.activations > needed.training - needed.activations:
        return "choose a smaller --batch-size or --maxlen, or fewer --units or --layers"
    return "choose fewer --units or --layers"


def _model(config: TrainConfig, needed: MemoryEstimate) -> str:
    layers = f"{config.layers} layers" if config.layers > 1 else "1 layer"
    return f"an LSTM of {layers} of {config.units:,} units ({needed.parameters:,} parameters)"


def machine_problem(needed: MemoryEstimate, config: TrainConfig, on_gpu: bool,
                    memory: int | None = None) -> str | None:
    """One sentence if what training holds in this machine's memory cannot fit there (all
    of it without a GPU; the sampler's float64 copy and the weights with one), else None.
    `memory`: the machine's bytes (default: machine_memory(); None there: unknown, passed)."""
    memory = machine_memory() if memory is None else memory
    needed_here = needed.sampler + needed.weights if on_gpu else needed.total
    if memory is None or needed_here <= memory:
        return None
    what = (f"about {gigabytes(needed_here)} of this machine's memory beside the GPU's (the weights "
            f"{gigabytes(needed.weights)} and the sampler's copy {gigabytes(needed.sampler)})" if on_gpu else
            f"about {gigabytes(needed_here)} to train ({needed.parts()})")
    return (f"{_model(config, needed)} needs {what}, more than this machine's {gigabytes(memory)}; "
            f"{_advice(needed)}")


def gpu_problem(needed: MemoryEstimate, config: TrainConfig, gpu_memory: list[int],
                replicas: int = 1) -> str | None:
    """One sentence if the training step cannot fit the smallest GPU (each replica holds
    the weights, gradients and moments, and its share of the batch), else None."""
    per_gpu = needed.weights + needed.gradients + needed.moments + needed.activations // max(1, replicas)
    smallest = min(gpu_memory)
    if per_gpu <= smallest:
        return None
    return (f"{_model(config, needed)} needs about {gigabytes(per_gpu)} on each GPU to train "
            f"({needed.parts()}), more than the {gigabytes(smallest)} TensorFlow can use there; "
            f"{_advice(needed)}")


def describe(needed: MemoryEstimate, memory: int | None = None) -> str:
    """The dry run's line: the estimate, and the memory it is measured against."""
    memory = machine_memory() if memory is None else memory
    where = f"; this machine has {gigabytes(memory)}" if memory else ""
    gpu = " (a GPU's memory is checked once TensorFlow has started)" if gpu_likely() else ""
    return f"Memory to train: about {gigabytes(needed.total)} ({needed.parts()}){where}{gpu}"


def refuse_if_too_big(config: TrainConfig, vocab_size: int = MIN_VOCAB) -> None:
    """Raise SettingError (a ValueError naming --units) if training these settings cannot
    fit this machine's memory: before TensorFlow, so a GPU's share is a guess (gpu_likely)."""
    problem = machine_problem(estimate(vocab_size, config), config, on_gpu=gpu_likely())
    if problem:
        raise SettingError("units", problem)


def check_machine_memory(vocab_size: int, config: TrainConfig) -> None:
    """Raise TrainingError if training cannot fit this machine's memory, before anything
    is built or written (a GPU's own memory is checked when the model is built)."""
    on_gpu = gpus_listed() if "tensorflow" in sys.modules else gpu_likely()
    problem = machine_problem(estimate(vocab_size, config), config, on_gpu=on_gpu)
    if problem:
        raise TrainingError(problem)


def check_gpu_memory(vocab_size: int, config: TrainConfig) -> None:
    """Raise TrainingError if a training step cannot fit the smallest GPU, as TensorFlow
    reports it (engine/compat.py); passed where it does not say."""
    if not gpus_listed():
        return
    sizes = gpu_memory_bytes()
    if not sizes:
        return
    replicas = tensorflow().distribute.get_strategy().num_replicas_in_sync
    problem = gpu_problem(estimate(vocab_size, config), config, sizes, replicas)
    if problem:
        raise TrainingError(problem)


def gpus_listed() -> bool:
    """Whether TensorFlow sees a GPU (imports it)."""
    return bool(tensorflow().config.list_physical_devices("GPU"))
