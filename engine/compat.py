"""Every use of another library's private API lives here.

Each one does a job no public API does (the Keras issue trackers and docs were searched
for one). Each has a test in tests/test_compat.py that fails, saying what to do, when the
library changes: the private name is gone, or the library no longer needs the workaround.
Nothing here imports TensorFlow or Keras until it is called.
"""

from __future__ import annotations

import functools
import tempfile


def keras_saving_lib():
    """Keras's saving module (`keras.src.saving.saving_lib`), or None in another layout."""
    try:
        from keras.src.saving import saving_lib
    except ImportError:
        return None
    return saving_lib


@functools.cache
def memoize_keras_skipsets() -> None:
    """Work around a leak in Keras's saving (3.x, 3.15.1 included): every save and load
    builds a throwaway `Optimizer(1.0)` to learn which attributes to skip, and each one
    leaves ~70 KB of TensorFlow memory behind, i.e. a leak per checkpoint (measured by
    bench/soak_memory.py). Keras means to cache the answer, but `get_attr_skipset`
    stores it under another key than the one it reads ("saving_attr_skipset_..." vs
    "saving_attr_skiplist_..."). The answer depends only on the type's name: compute it
    once. The function Keras had stays reachable as `.keras_original` (for the test)."""
    saving_lib = keras_saving_lib()
    skipset = getattr(saving_lib, "get_attr_skipset", None)
    if not callable(skipset) or hasattr(skipset, "keras_original"):
        return  # another Keras layout (tests/test_compat.py says so), or done already

    @functools.lru_cache(maxsize=None)
    def get_attr_skipset(obj_type):
        return frozenset(skipset(obj_type))

    get_attr_skipset.keras_original = skipset
    saving_lib.get_attr_skipset = get_attr_skipset


def traced_function_count() -> int | None:
    """How many traced functions TensorFlow's eager context holds, or None if TensorFlow
    no longer says. A model keeps Keras's as long as it lives, so a count that grows
    epoch after epoch means Keras retraces per `fit` call: a leak (bench/soak_memory.py,
    and a test in tests/test_reliability.py). `tf.function(...).experimental_get_tracing_count`
    is public but counts one function, and Keras's are not ours to reach."""
    try:
        from tensorflow.python.eager import context

        return len(context.context().list_function_names())
    except (ImportError, AttributeError):
        return None


# Where Keras 3 keeps the optimizer's step count in a .keras archive's model.weights.h5:
# the optimizer's first variable (`iterations`, an int64 scalar). Keras reads it back only
# by rebuilding the whole model and optimizer, i.e. importing TensorFlow.
KERAS_ITERATIONS_DATASET = "optimizer/vars/0"


def saved_optimizer_step(weights_h5) -> int | None:
    """The optimizer step a Keras 3 checkpoint was saved at, from its model.weights.h5
    (an open h5py.File), or None if the file does not keep it where Keras 3 does. `sample`
    says which step it samples from without TensorFlow (tests/test_compat.py checks the
    place against a real checkpoint)."""
    import numpy as np  # (here: tfsetup imports this module, and `--help` needs no numpy)

    dataset = weights_h5.get(KERAS_ITERATIONS_DATASET)
    if dataset is None or getattr(dataset, "shape", None) != () or dataset.dtype.kind not in "iu":
        return None
    step = int(np.asarray(dataset[()]))
    return step if step >= 0 else None


def device_memory_limits() -> list[tuple[str, int]] | None:
    """(device type, bytes TensorFlow will use there) for each local device, or None if
    TensorFlow does not say. Its public API names GPUs (tf.config) and reports their
    current and peak use, never their size: only `device_lib.list_local_devices` does."""
    try:
        from tensorflow.python.client import device_lib

        devices = device_lib.list_local_devices()
        return [(str(device.device_type), int(device.memory_limit)) for device in devices]
    except Exception:  # another layout, or a device that cannot be set up: the check is skipped
        return None


def gpu_memory_bytes() -> list[int] | None:
    """The memory TensorFlow will use on each GPU (bytes; the allocator's limit), or None
    if it does not say. Call it only once TensorFlow is imported and a GPU is listed."""
    sizes = [size for kind, size in device_memory_limits() or () if kind == "GPU"]
    return sizes or None


class _TemporaryFilesIn:
    """The `tempfile` module as one module of TensorFlow's sees it: NamedTemporaryFile makes
    its files in `folder` unless told another; everything else is the real module's."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def NamedTemporaryFile(self, *args, **kwargs):  # noqa: N802 (tempfile's own name)
        kwargs.setdefault("dir", self.folder)
        return tempfile.NamedTemporaryFile(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(tempfile, name)


def autograph_files_in(folder: str) -> bool:
    """Make TensorFlow's autograph write the code it generates into `folder`. Its loader
    (tensorflow.python.autograph.pyct.loader.load_source) writes each function to a
    tempfile.NamedTemporaryFile in the process's temporary folder and removes it only in
    an exit handler, which a front end that leaves with os._exit skips; no public API
    names a folder for them. So that module alone is given a `tempfile` whose files go to
    `folder` (removed by engine.tfsetup.remove_temporary_files): the process's own temporary
    folder is left alone. Returns False in another TensorFlow layout (the files then go to
    the temporary folder, as TensorFlow makes them)."""
    try:
        from tensorflow.python.autograph.pyct import loader
    except ImportError:
        return False
    if not callable(getattr(loader, "load_source", None)) or not hasattr(loader, "tempfile"):
        return False
    loader.tempfile = _TemporaryFilesIn(folder)
    return True
