"""Import TensorFlow/Keras on demand, quietly.

TensorFlow takes seconds to import and prints C++ log lines straight to file
descriptor 2, so front ends call `keras()` only when they need it (never at start-up),
and the import runs with fd 2 pointed at a scratch file that is replayed only if the
import fails.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import stat
import tempfile
import warnings

from engine.compat import autograph_files_in

SCRATCH_PREFIX = "charlm-tf-"
_scratch_dir: str | None = None


def _quiet_environment() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")       # C++ INFO/WARNING/ERROR lines
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    warnings.filterwarnings("ignore", module=r"(tensorflow|keras|absl|h5py)(\.|$)")


@functools.cache
def keras():
    """The `keras` module, with TensorFlow imported behind it and its logging silenced."""
    _quiet_environment()
    with tempfile.TemporaryFile() as scratch:
        saved_fd = os.dup(2)
        os.dup2(scratch.fileno(), 2)
        try:
            import absl.logging
            absl.logging.set_verbosity(absl.logging.ERROR)
            import keras as keras_module
            import tensorflow as tf
        except BaseException:
            os.dup2(saved_fd, 2)
            scratch.seek(0)
            os.write(2, scratch.read())
            raise
        finally:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
    tf.get_logger().setLevel("ERROR")
    _split_cpu(tf)
    autograph_files_in(_private_scratch_dir())
    return keras_module


def _private_scratch_dir() -> str:
    """TensorFlow writes the code it generates (autograph) to temporary files that only
    its exit handlers remove; a front end that leaves with os._exit to skip TensorFlow's
    slow interpreter teardown calls `remove_temporary_files` instead. Hence a folder of
    this process's own for them, given to autograph alone (engine/compat.py): the rest of
    the process, a library user's code included, keeps its temporary folder."""
    global _scratch_dir
    if _scratch_dir is None:
        remove_stale_temporary_files(tempfile.gettempdir())
        _scratch_dir = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")
        atexit.register(remove_temporary_files)
    return _scratch_dir


def remove_stale_temporary_files(folder: str) -> None:
    """Remove the scratch folders of earlier processes that could not remove their own
    (kill -9, a power cut): this user's `charlm-tf-PID-*` folders whose process is gone.
    A folder whose process still runs (or whose owner cannot be told) is left alone."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            pid = _scratch_owner(entry.name)
            if pid is None or pid == os.getpid() or _running(pid):
                continue
            with contextlib.suppress(OSError):
                details = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(details.st_mode) and details.st_uid == os.geteuid():
                    shutil.rmtree(entry.path, ignore_errors=True)


def _scratch_owner(name: str) -> int | None:
    """The process id in a scratch folder's name (charlm-tf-PID-random), else None."""
    if not name.startswith(SCRATCH_PREFIX):
        return None
    pid, _, rest = name[len(SCRATCH_PREFIX):].partition("-")
    return int(pid) if pid.isdigit() and rest else None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: running
        return True
    return True


def remove_temporary_files() -> None:
    """Remove the temporary files TensorFlow wrote for this process (see above)."""
    if _scratch_dir is not None:
        shutil.rmtree(_scratch_dir, ignore_errors=True)


# Set to N to see N logical CPU devices: --strategy mirrored can then be exercised on a
# machine without GPUs (the tests do).
LOGICAL_CPUS_VARIABLE = "CHARLM_LOGICAL_CPUS"


def _split_cpu(tf) -> None:
    count = int(os.environ.get(LOGICAL_CPUS_VARIABLE) or 0)
    if count > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)


def tensorflow():
    keras()
    import tensorflow as tf
    return tf


@functools.cache
def device_name() -> str:
    """"CPU", or the name of the first GPU TensorFlow sees (with the count if several)."""
    tf = tensorflow()
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU"
    try:
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    except Exception:  # details are best-effort and vary by platform
        name = "GPU"
    return f"{len(gpus)}x {name}" if len(gpus) > 1 else name
