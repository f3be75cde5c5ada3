"""A run directory: the checkpoint and everything needed to resume or sample from it.

    model.keras       weights + optimizer state (the step count lives in the optimizer)
    model.prev.keras  the checkpoint before it, kept in case the newest is damaged
    model.best.keras  the epoch-end checkpoint with the lowest held-out loss (a hard link)
    model.sampler.npz, model.prev.sampler.npz
                      the sampler's weights in numpy, fingerprinted against the .keras
                      file each came from: text without TensorFlow (engine/sidecar.py)
    config.json       the full TrainConfig and what corpus it was trained on
    vocab.json        the characters, in id order
    state.json        wall-clock seconds and counters (informational)
    metrics.jsonl     one JSON object per logging interval and per epoch
    samples/          the text generated after each epoch (epoch-NNNN.txt)
    .lock             held by the process that trains here
    charlm-tui.log    the app's log; samples-*.txt are the app's exports

Every file is written to a temporary name, flushed to disk and renamed over the old
one, so a kill at any moment leaves the previous complete version in place.
metrics.jsonl is append-only, one whole line per write; a torn last line (kill -9
mid-write on a full disk) is ignored by readers and cut off on resume.

The run directory is the user's disk: training starts only in a new or empty directory
or in a charlm-tui run (`RunDir.check_can_train`), writes and deletes only the names
above, and never writes through a symbolic link (files are created with O_NOFOLLOW,
temporaries with O_EXCL, and renaming over a link replaces the link, not its target).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import io
import json
import math
import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from engine.compat import memoize_keras_skipsets
from engine.config import SESSION_FIELDS, SettingError, TrainConfig
from engine.errors import RunDirError

FORMAT_VERSION = 1


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _explain(error: OSError, action: str, path: Path) -> RunDirError:
    reason = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
              errno.EACCES: "permission denied", errno.EDQUOT: "the disk quota is exceeded",
              errno.EFBIG: "the file size limit is reached (ulimit -f)",
              errno.ELOOP: "it is a symbolic link, and charlm-tui does not write through links",
              errno.ENXIO: "it is not a regular file"}
    return RunDirError(f"could not {action} {path}: {reason.get(error.errno, error.strerror or str(error))}")


# Every name charlm-tui writes in a run directory; nothing else there is written or deleted.
PROJECT_FILES = ("model.keras", "model.prev.keras", "model.best.keras", "config.json", "vocab.json", "state.json",
                 "metrics.jsonl", ".lock", "charlm-tui.log")
# What a first start writes before config.json (which marks a run from then on): a
# directory holding only these is a start that was interrupted, and may be used.
STARTING_FILES = frozenset({".lock", "charlm-tui.log", "vocab.json"})
SAMPLE_NAME = re.compile(r"epoch-\d{4,}\.txt")
# .NAME.tmp-PID (atomic_write_bytes), .model-PID.tmp.keras and .model-prev-PID.tmp (save_model)
TEMPORARY_NAME = re.compile(r"\..+\.tmp-\d+|\.model-\d+\.tmp\.keras|\.model-(prev|best)-\d+\.tmp")
MAX_NEW_FILE_ATTEMPTS = 1000
RUN_CONFIG_PEEK_BYTES = 4 << 20  # a config.json we wrote is a few KB


def _create_exclusive(path: Path) -> int:
    """A new file at `path`, open for writing: O_EXCL fails on anything already there, a
    symbolic link included, so nothing outside is ever written through a planted link."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one step: the one way the engine writes a file.

    The data goes to a new temporary (.NAME.tmp-PID, created with O_EXCL), is flushed to
    disk and renamed over `path`; a rename replaces a link at `path` itself, never the
    file it points to."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        try:
            fd = _create_exclusive(temporary)
        except FileExistsError:  # left by a killed process that had our pid: ours to remove
            temporary.unlink()   # (unlink removes a link itself, never its target)
            fd = _create_exclusive(temporary)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise _explain(error, "write", path) from None
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, data) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def write_new_file(folder, name: str, text: str) -> Path:
    """Write `text` to a new file folder/NAME.txt, or NAME-2.txt, NAME-3.txt... when the
    name is taken (exports): nothing already there is replaced or followed.

    The name is reserved with O_EXCL (an empty file), then filled by atomic_write_bytes,
    so a reader never sees half the text. Raises RunDirError."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _explain(error, "create", folder) from None
    for attempt in range(1, MAX_NEW_FILE_ATTEMPTS + 1):
        path = folder / (f"{name}.txt" if attempt == 1 else f"{name}-{attempt}.txt")
        try:
            os.close(_create_exclusive(path))
        except FileExistsError:
            continue
        except OSError as error:
            raise _explain(error, "write", path) from None
        try:
            atomic_write_bytes(path, text.encode("utf-8"))
        except RunDirError:
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        return path
    raise RunDirError(f"could not write {folder / name}.txt: {MAX_NEW_FILE_ATTEMPTS} files of that name "
                      "are there already")


def save_rescue_run(save) -> Path:
    """Save what a run directory could not take in a new folder charlm-tui-rescue-DATE-XXXX,
    in the user's cache (it survives a reboot), else in the temporary folder: `save(run)`
    writes into the RunDir given. Returns the folder; raises RunDirError if neither takes it
    (a folder that failed is removed: it is a new one of ours)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    parents = [Path(tempfile.gettempdir())]
    with contextlib.suppress(RuntimeError):  # no home directory
        cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        parents.insert(0, Path(cache).expanduser() / "charlm-tui")
    problems = []
    for parent in parents:
        try:
            parent.mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix=f"charlm-tui-rescue-{stamp}-", dir=parent))
        except OSError as error:
            problems.append(str(_explain(error, "create a folder in", parent)))
            continue
        try:
            save(RunDir(folder))
            return folder
        except RunDirError as error:
            shutil.rmtree(folder, ignore_errors=True)
            problems.append(str(error))
    raise RunDirError("; ".join(problems))


def _is_real_directory(path: Path) -> bool:
    """A directory of its own: not a link to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _open_directory(path: Path, *, follow_link: bool) -> int | None:
    """A descriptor for the directory `path` (None if it is not one, or is a link and
    `follow_link` is false), so the names read and removed through it stay in it."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | (0 if follow_link else os.O_NOFOLLOW)
    try:
        return os.open(path, flags)
    except OSError:
        return None


def _remove_names(folder: Path, wanted, *, follow_link: bool = False) -> None:
    """Remove the files (or links: unlink never touches a target) in `folder` itself whose
    names `wanted` accepts. A `folder` that is a link is left alone unless `follow_link`
    (the run directory itself, which --run may name through a link)."""
    fd = _open_directory(folder, follow_link=follow_link)
    if fd is None:
        return
    try:
        for entry in os.scandir(fd):
            if wanted(entry.name) and not entry.is_dir(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.name, dir_fd=fd)
    except OSError as error:
        raise _explain(error, "remove old files in", folder) from None
    finally:
        os.close(fd)


def _looks_like_run_config(path: Path) -> bool:
    """Whether `path` is a config.json that charlm-tui wrote (a JSON object with the format
    and the config), read only if it is a small regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode) or status.st_size > RUN_CONFIG_PEEK_BYTES:
            return False
        data = json.loads(os.read(fd, RUN_CONFIG_PEEK_BYTES))
    except (OSError, ValueError, RecursionError):
        return False
    finally:
        os.close(fd)
    return isinstance(data, dict) and "format" in data and isinstance(data.get("config"), dict)


# Run files are read only as regular files, never through a link, never blocking, and
# at most as large as charlm-tui could have written them: a run directory may come from
# anywhere, and /dev/zero behind a link or a FIFO must not exhaust memory or hang.
MAX_JSON_BYTES = 4 << 20           # config.json, vocab.json, state.json (ours: a few KB)
READ_CHUNK_BYTES = 1 << 20         # metrics.jsonl is read this much at a time
MAX_METRICS_LINE_BYTES = 64 << 10  # our rows are ~300 bytes; longer lines are skipped unread


def _not_regular(mode: int) -> str | None:
    """What a file of this st_mode is, if it is not a regular file."""
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
             (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))
    return next((kind for test, kind in kinds if test(mode)), "not a regular file")


class NotRegularFile(Exception):
    """open_regular_file met a link, FIFO, device, folder or socket: `kind` says which."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(f"{path} is {kind}, not a regular file")
        self.path, self.kind = path, kind


class FileTooLarge(Exception):
    """open_regular_file met a file over its size limit (`size` None: it grew while read)."""

    def __init__(self, path: Path, size: int | None, limit: int) -> None:
        super().__init__(f"{path} is over {limit:,} bytes")
        self.path, self.size, self.limit = path, size, limit


def _check_regular(path: Path, mode: int) -> None:
    kind = _not_regular(mode)
    if kind is not None:
        raise NotRegularFile(path, kind)


def open_regular_file(path, max_bytes: int | None = None):
    """A file opened for binary reading only if it is a regular file: never through a
    symbolic link, never blocking (a FIFO or device is refused before it is opened), and
    at most `max_bytes` long. Any file charlm-tui did not write itself (run files, a seed
    file, the recent corpora) is read this way, so a FIFO cannot hang it and /dev/zero
    behind a link cannot fill its memory. Raises NotRegularFile, FileTooLarge or OSError
    (FileNotFoundError for a missing one)."""
    path = Path(path)
    _check_regular(path, os.lstat(path).st_mode)  # look first: a device is never opened
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:  # it became a link after the look
            raise NotRegularFile(path, "a symbolic link") from None
        raise
    try:
        info = os.fstat(fd)
        _check_regular(path, info.st_mode)  # replaced between the look and the open
        if max_bytes is not None and info.st_size > max_bytes:
            raise FileTooLarge(path, info.st_size, max_bytes)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_file(path, max_bytes: int) -> bytes:
    """The whole of a small file, read as open_regular_file opens it (and refused with
    FileTooLarge if it grew past `max_bytes` while being read)."""
    with open_regular_file(path, max_bytes) as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileTooLarge(Path(path), None, max_bytes)
    return data


def _refuse_irregular(path: Path, kind: str) -> RunDirError:
    return RunDirError(f"{path} is {kind}, not a regular file: charlm-tui reads run files only as "
                       "regular files, never through links, so put the real file there or choose "
                       "another run directory")


def _refuse_too_large(error: FileTooLarge) -> RunDirError:
    if error.size is None:
        return RunDirError(f"{error.path} grew past {error.limit:,} bytes while being read, more than "
                           "charlm-tui ever writes there: refused")
    return RunDirError(f"{error.path} is {error.size:,} bytes, more than charlm-tui ever writes "
                       f"there ({error.limit:,} at most): refused")


def open_run_file(path: Path, max_bytes: int | None = None):
    """A run file opened for binary reading (see open_regular_file), its refusals told
    as RunDirError. FileNotFoundError passes through: callers say what missing means."""
    try:
        return open_regular_file(path, max_bytes)
    except FileNotFoundError:
        raise
    except NotRegularFile as error:
        raise _refuse_irregular(error.path, error.kind) from None
    except FileTooLarge as error:
        raise _refuse_too_large(error) from None
    except OSError as error:
        raise _explain(error, "read", Path(path)) from None


def _read_run_file(path: Path, max_bytes: int = MAX_JSON_BYTES) -> bytes:
    """The whole of a small run file (see open_run_file); FileNotFoundError passes through."""
    try:
        return read_regular_file(path, max_bytes)
    except FileNotFoundError:
        raise
    except NotRegularFile as error:
        raise _refuse_irregular(error.path, error.kind) from None
    except FileTooLarge as error:
        raise _refuse_too_large(error) from None
    except OSError as error:
        raise _explain(error, "read", Path(path)) from None


def _read_json(path: Path):
    try:
        raw = _read_run_file(path)
    except FileNotFoundError:
        raise RunDirError(f"{path} is missing: is {path.parent} a charlm-tui run directory?") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise RunDirError(f"{path} is damaged or not JSON ({error})") from None


# What a checkpoint written by engine.model.build_model may contain. Anything else in
# model.keras (a Lambda layer holding bytecode, a custom class, a function from another
# module) is refused before Keras sees it: nothing from a run directory is ever executed,
# whatever the Keras version's own safe_mode covers.
ARCHIVE_MEMBERS = {"metadata.json", "config.json", "model.weights.h5"}
KERAS_CLASSES = {
    "Functional", "InputLayer", "Reshape", "CategoryEncoding", "LSTM",
    "LSTMCell", "Dropout", "Dense", "Adam", "RMSprop", "LossScaleOptimizer", "DTypePolicy", "FloatDTypePolicy", "Policy",
    "GlorotUniform", "Orthogonal", "Zeros", "Ones", "__keras_tensor__",
}
MAX_CONFIG_BYTES = 4 << 20
MAX_METADATA_BYTES = 1 << 20
# Keras stores the members uncompressed; a zip tool may have deflated them. Nothing else
# is ever decompressed: bzip2 and LZMA reach a million to one, so 2 KB of either can
# fill the memory. Every size is checked as the archive declares it before a byte is
# decompressed, and reading stops at the declared sizes.
ARCHIVE_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
METHOD_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA"}
MAX_DEFLATE_RATIO = 100            # ours deflate ~1.1:1 (weights) to ~10:1 (JSON)
MAX_CHECKPOINT_BYTES = 8 << 30     # the weights of any run, whatever its settings say
MAX_WEIGHT_OBJECTS = 10_000        # groups and datasets in model.weights.h5 (ours: a few dozen)


def checkpoint_bytes_bound(config: TrainConfig, vocab_size: int) -> int:
    """The most bytes the weights file of this run's checkpoint may declare: the weights
    and the optimizer's slots (three float32 copies at most: Adam's two moments), four
    times over for HDF5's bookkeeping, plus 1 MiB; never more than MAX_CHECKPOINT_BYTES."""
    from engine.model import parameter_count

    return min(MAX_CHECKPOINT_BYTES, 4 * 3 * 4 * parameter_count(vocab_size, config) + (1 << 20))


def archive_problem(path: Path, config: TrainConfig | None = None, vocab_size: int | None = None) -> str | None:
    """Why `path` is not a loadable charlm-tui checkpoint, or None if it looks whole and
    holds only our layers (checked without Keras: declared sizes and compression methods,
    then CRCs, then config.json). Given the run's config and vocabulary size, the weights
    may be no larger than such a model needs (checkpoint_bytes_bound) and the network
    must be exactly the one engine.model.build_model makes for them."""
    weights_limit = MAX_CHECKPOINT_BYTES if config is None else checkpoint_bytes_bound(config, vocab_size)
    file_limit = weights_limit + MAX_CONFIG_BYTES + MAX_METADATA_BYTES + (64 << 10)  # + zip headers
    try:
        with open_run_file(path, file_limit) as handle, zipfile.ZipFile(handle) as archive:
            problem = _members_problem(archive.infolist(), weights_limit) or _damaged_member(archive)
            if problem is None and config is not None:  # loading, not checking our own save
                problem = _weights_problem(archive, weights_limit)
            if problem:
                return problem
            keras_config = json.loads(archive.read("config.json"))
    except FileNotFoundError:
        return "missing"
    except RunDirError as error:  # a link, a FIFO, a device, or far too large
        return str(error)
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, NotImplementedError):
        return "not a .keras archive (truncated or damaged)"
    except (ValueError, RecursionError):
        return "its config.json is damaged"
    problem = _foreign_object(keras_config)
    if problem is None and config is not None:
        from engine.model import architecture_problem

        problem = architecture_problem(keras_config, config, vocab_size)
    return problem


def _members_problem(members: list[zipfile.ZipInfo], weights_limit: int) -> str | None:
    """What is wrong with the archive's directory: its names, declared sizes, methods."""
    limits = {"metadata.json": MAX_METADATA_BYTES, "config.json": MAX_CONFIG_BYTES,
              "model.weights.h5": weights_limit}
    names = [member.filename for member in members]
    if not {"config.json", "model.weights.h5"} <= set(names):
        return "not a complete .keras archive"
    if set(names) - ARCHIVE_MEMBERS:
        return f"unexpected files in the archive ({', '.join(sorted(set(names) - ARCHIVE_MEMBERS))})"
    if len(names) != len(set(names)):
        return "the archive lists a file twice"
    for member in members:
        name, size = member.filename, member.file_size
        if member.compress_type not in ARCHIVE_METHODS:
            method = METHOD_NAMES.get(member.compress_type, f"method {member.compress_type}")
            return (f"{name} in the archive is compressed with {method}; charlm-tui checkpoints are "
                    "stored or deflated, and other methods can hide a decompression bomb")
        if member.flag_bits & 0x1:
            return f"{name} in the archive is encrypted"
        if size > limits[name]:
            return (f"{name} in the archive declares {size:,} bytes, more than a checkpoint of this "
                    f"run ever holds ({limits[name]:,} at most)")
        if member.compress_type == zipfile.ZIP_STORED and member.compress_size != size:
            return f"{name} in the archive is damaged (its stored and declared sizes differ)"
        if size > MAX_DEFLATE_RATIO * max(member.compress_size, 1):
            return (f"{name} in the archive declares {size:,} bytes from {member.compress_size:,} "
                    "compressed, a ratio no checkpoint has (a decompression bomb?)")
    return None


def _damaged_member(archive: zipfile.ZipFile) -> str | None:
    """The first member whose CRC does not match, read a chunk at a time; zipfile stops
    each read at the size the directory declares, which _members_problem has bounded."""
    for member in archive.infolist():
        try:
            with archive.open(member) as data:
                while data.read(READ_CHUNK_BYTES):
                    pass
        except zipfile.BadZipFile:
            return f"{member.filename} in the archive is damaged (CRC mismatch)"
    return None


def _weights_problem(archive: zipfile.ZipFile, limit: int) -> str | None:
    """What in model.weights.h5 could make reading it cost more than `limit` bytes or
    reach outside it: an HDF5 dataset declares its shape apart from what it stores (a
    few KB can declare gigabytes of fill value), and may point at other files. Checked
    with h5py, which runs nothing from the file, before Keras reads a single weight."""
    import h5py

    declared, objects = 0, 0
    try:
        with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as weights:
            groups = [weights]
            while groups:
                group = groups.pop()
                for name in group:
                    objects += 1
                    if objects > MAX_WEIGHT_OBJECTS:
                        return "its weights file holds far more objects than a charlm-tui model has"
                    if not isinstance(group.get(name, getlink=True), h5py.HardLink):
                        return "its weights file links to other places or files"
                    item = group[name]
                    if isinstance(item, h5py.Group):
                        groups.append(item)
                        continue
                    if not isinstance(item, h5py.Dataset) or item.external or item.is_virtual:
                        return "its weights file holds data stored outside it"
                    declared += item.size * item.dtype.itemsize
                    if declared > limit:
                        return (f"its weights file declares more than {limit:,} bytes of weights, more "
                                "than a model of this run's size holds")
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        return f"its weights file is damaged ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
    return None


def checkpoint_step(path: Path) -> int | None:
    """The optimizer step a checkpoint was saved at, read without Keras from its weights
    file (engine/compat.py knows where Keras keeps it), or None if that cannot be told.
    For a checkpoint that archive_problem has passed: its sizes are bounded by then."""
    import h5py

    from engine.compat import saved_optimizer_step

    try:
        with open_run_file(path) as handle, zipfile.ZipFile(handle) as archive:
            with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as weights:
                return saved_optimizer_step(weights)
    except (OSError, RunDirError, KeyError, ValueError, TypeError, RuntimeError, EOFError,
            zipfile.BadZipFile, zlib.error, NotImplementedError):
        return None


def _foreign_object(node) -> str | None:
    """The first serialized object in a Keras config that build_model could not have made."""
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if "class_name" in node:
                name, module = node.get("class_name"), node.get("module")
                if name in ("Lambda", "__lambda__"):
                    return ("it contains a Lambda layer, i.e. Python code; charlm-tui never runs code "
                            "from a run directory (models load in Keras safe mode)")
                if name not in KERAS_CLASSES or not (module is None or (isinstance(module, str)
                                                                         and module.split(".")[0] == "keras")):
                    return (f"it contains {name!r} from {module!r}, which a charlm-tui model never holds; "
                            "refused (nothing from a run directory is executed)")
                if node.get("registered_name") not in (None, name):
                    return f"it contains a custom object {node.get('registered_name')!r}; refused"
            stack.extend(node.values())
    return None


class RunDir:
    def __init__(self, path):
        self.path = Path(path)
        self.model_path = self.path / "model.keras"
        self.previous_model_path = self.path / "model.prev.keras"
        self.best_model_path = self.path / "model.best.keras"  # the lowest held-out loss so far
        self.config_path = self.path / "config.json"
        self.vocab_path = self.path / "vocab.json"
        self.state_path = self.path / "state.json"
        self.metrics_path = self.path / "metrics.jsonl"
        self.samples_dir = self.path / "samples"
        self.lock_path = self.path / ".lock"
        self._lock_fd: int | None = None

    # -- creation and locking ---------------------------------------------------------
    def check_can_train(self, corpus_path=None) -> None:
        """Refuse, before anything is written, a directory that training could hurt.

        Training may use a directory that does not exist yet or is empty, one that is a
        charlm-tui run (its config.json is one charlm-tui wrote; other files next to it are
        left alone), or one holding only what a first start writes before config.json
        (.lock, charlm-tui.log, vocab.json, temporaries). The project's own files there must
        be regular files, not links (samples/ a real folder), and the corpus must not lie
        inside the directory. Raises RunDirError with a sentence saying what to do."""
        self._refuse_corpus_inside(corpus_path)
        try:
            status = os.stat(self.path)  # followed: --run may name a link to a folder
        except (FileNotFoundError, NotADirectoryError):
            return  # a new run directory
        except OSError as error:
            raise _explain(error, "open", self.path) from None
        if not stat.S_ISDIR(status.st_mode):
            raise RunDirError(f"{self.path} exists and is not a directory; choose another --run")
        self._refuse_links_and_oddities()
        if _looks_like_run_config(self.config_path):
            return
        foreign = self._first_name_not_of_a_start()
        if foreign is None:
            return
        why = ("its config.json is not one charlm-tui wrote" if foreign == "config.json"
               else f"it holds {foreign!r}")
        raise RunDirError(f"{self.path} is not a charlm-tui run and is not empty ({why}); choose a new or "
                          "empty directory for --run, so that no file of yours is replaced or deleted")

    def _refuse_corpus_inside(self, corpus_path) -> None:
        if corpus_path is None:
            return
        corpus, run = Path(os.path.realpath(corpus_path)), Path(os.path.realpath(self.path))
        if corpus == run or run in corpus.parents:
            raise RunDirError(f"the corpus {corpus_path} lies inside the run directory {self.path}, where "
                              "training replaces and deletes files; move it out or choose another --run")

    def _refuse_links_and_oddities(self) -> None:
        for name in (*PROJECT_FILES, "samples"):
            path = self.path / name
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                continue
            except OSError as error:
                raise _explain(error, "open", path) from None
            if stat.S_ISLNK(mode):
                raise RunDirError(f"{path} is a symbolic link and charlm-tui writes only real files in its run "
                                  "directory; remove the link or choose another --run")
            wanted = stat.S_ISDIR if name == "samples" else stat.S_ISREG
            if not wanted(mode):
                kind = "a folder" if name == "samples" else "a regular file"
                raise RunDirError(f"{path} is not {kind}; remove it or choose another --run")

    def _first_name_not_of_a_start(self) -> str | None:
        try:
            with os.scandir(self.path) as entries:
                for entry in entries:
                    if entry.name not in STARTING_FILES and not TEMPORARY_NAME.fullmatch(entry.name):
                        return entry.name
        except OSError as error:
            raise _explain(error, "list", self.path) from None
        return None

    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise _explain(error, "create the run directory", self.path) from None
        if not self.path.is_dir():
            raise RunDirError(f"{self.path} exists and is not a directory")

    def acquire(self) -> None:
        """Take the run directory for this process, or say which process has it."""
        self.create()
        try:  # never through a link; O_NONBLOCK: a FIFO there cannot hang us
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         0o644)
        except OSError as error:
            raise _explain(error, "lock", self.lock_path) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise RunDirError(f"{self.lock_path} is not a regular file; remove it or choose another --run")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirError(f"{self.path} is in use by another charlm-tui process (pid {owner}); "
                              "stop it or choose another --run") from None
        with contextlib.suppress(OSError):  # the pid is informational; a full disk must not stop us
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def holds_lock(self) -> bool:
        """Whether this process's lock is still the run directory's .lock: false once the
        directory was deleted, moved or replaced (rm -rf RUN while training)."""
        if self._lock_fd is None:
            return False
        try:
            ours, there = os.fstat(self._lock_fd), os.stat(self.lock_path, follow_symlinks=False)
        except OSError:
            return False
        return (ours.st_dev, ours.st_ino) == (there.st_dev, there.st_ino)

    def release(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock_fd, 0)
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    @property
    def acquired(self) -> bool:
        """Whether this RunDir has taken the run directory (acquire)."""
        return self._lock_fd is not None

    # -- config and vocabulary -----------------------------------------------------------
    def has_checkpoint(self) -> bool:
        return self.model_path.exists() or self.previous_model_path.exists()

    def write_config(self, config: TrainConfig, corpus_meta: dict) -> None:
        # A session's stopping limits are not the run's: a later session must not inherit them.
        settings = {**config.to_json(), **{name: None for name in SESSION_FIELDS}}
        atomic_write_json(self.config_path, {"format": FORMAT_VERSION, "config": settings,
                                             "corpus": corpus_meta})

    def load_config(self) -> TrainConfig:
        data = _read_json(self.config_path)
        try:
            if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
                raise ValueError("no config object in it")
            _check_config_types(data["config"])
            return TrainConfig.from_json(data["config"])
        except SettingError as error:  # name the field, whatever the sentence calls it
            detail = str(error) if str(error).startswith(error.field) else f"{error.field}: {error}"
            raise RunDirError(f"{self.config_path} is not a valid charlm-tui config ({detail})") from None
        except (KeyError, TypeError, ValueError) as error:
            raise RunDirError(f"{self.config_path} is not a valid charlm-tui config ({error})") from None

    def corpus_meta(self) -> dict:
        data = _read_json(self.config_path)
        meta = data.get("corpus") if isinstance(data, dict) else None
        return meta if isinstance(meta, dict) else {}

    def write_vocab(self, vocab) -> None:
        atomic_write_json(self.vocab_path, {"format": FORMAT_VERSION, "vocab": list(vocab)})

    def load_vocab(self) -> tuple[str, ...]:
        data = _read_json(self.vocab_path)
        vocab = data.get("vocab") if isinstance(data, dict) else None
        valid = (isinstance(vocab, list) and len(vocab) >= 2 and len(set(vocab)) == len(vocab)
                 and all(isinstance(ch, str) and len(ch) == 1 for ch in vocab))
        if not valid:
            raise RunDirError(f"{self.vocab_path} does not hold a list of distinct single characters")
        return tuple(vocab)

    # -- state, metrics, samples ------------------------------------------------------------
    def write_state(self, state: dict) -> None:
        atomic_write_json(self.state_path, state)

    def load_state(self) -> dict:
        """state.json is informational: anything missing or malformed in it reads as absent
        (a link, a FIFO or a huge file is refused, as every run file is)."""
        try:
            data = json.loads(_read_run_file(self.state_path).decode("utf-8"))
        except (FileNotFoundError, ValueError, RecursionError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {key: value for key, value in data.items() if _is_number(value)}

    def append_metrics(self, row: dict) -> None:
        line = (json.dumps(row, sort_keys=True) + "\n").encode()
        try:  # never through a link; O_NONBLOCK: a FIFO there fails instead of hanging
            fd = os.open(self.metrics_path,
                         os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         0o644)
            try:
                os.write(fd, line)  # one write: a reader never sees half a line from us
            finally:
                os.close(fd)
        except OSError as error:
            raise _explain(error, "append to", self.metrics_path) from None

    def read_metrics(self) -> list[dict]:
        return read_metrics(self.path)

    def keep_metrics_up_to(self, step: int) -> None:
        """On resume: drop rows logged after the checkpoint (they will be redone).

        Streamed: the lines of the rows kept are copied as they are into a temporary file
        that then replaces metrics.jsonl, so memory does not depend on the file's length
        and the file never grows (torn, foreign and absurdly long lines go)."""
        if not os.path.lexists(self.metrics_path):
            return
        temporary = self.path / f".{self.metrics_path.name}.tmp-{os.getpid()}"
        try:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()  # left by a killed process that had our pid
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            with os.fdopen(fd, "wb") as kept:
                for line, row in _metrics_lines(self.metrics_path):
                    if _is_number(row.get("step")) and row["step"] <= step:
                        kept.write(line + b"\n")
                kept.flush()
                os.fsync(kept.fileno())
            os.replace(temporary, self.metrics_path)
        except (OSError, RunDirError) as error:
            with contextlib.suppress(OSError):
                temporary.unlink()
            if isinstance(error, RunDirError):
                raise
            raise _explain(error, "rewrite", self.metrics_path) from None
        _fsync_dir(self.path)

    def clear_history(self) -> None:
        """Start over: forget metrics, state and the epoch samples (the old model is replaced
        at the first checkpoint). Only the project's own names are removed, in the run
        directory itself: unlink removes a link, never its target, and a `samples` that is a
        link or not a folder is left alone (check_can_train refuses such a directory)."""
        _remove_names(self.path, lambda name: name in (self.metrics_path.name, self.state_path.name),
                      follow_link=True)
        _remove_names(self.samples_dir, lambda name: bool(SAMPLE_NAME.fullmatch(name)
                                                          or TEMPORARY_NAME.fullmatch(name)))

    # What a run is, moved aside whole by `move_aside` (the lock stays: this process holds it).
    RUN_NAMES = ("model.keras", "model.prev.keras", "model.best.keras", "model.sampler.npz",
                 "model.prev.sampler.npz", "model.best.sampler.npz",
                 "config.json", "vocab.json", "state.json", "metrics.jsonl", "samples")
    EXPORT_NAME = re.compile(r"samples-[^/]*\.txt")  # the app's exports (write_new_file)
    EPOCH_NAME = re.compile(r"model\.epoch-(\d{4,})\.(keras|sampler\.npz)")  # --keep-every

    def move_aside(self) -> Path | None:
        """Start over keeping the previous run whole: move its files into a new sibling
        folder RUN.prev-YYYYmmdd-HHMMSS and return it (None when there was no run here).
        Only the project's own names move, each by a rename inside one file system: a
        link is moved as a link, never followed (check_can_train refuses them anyway)."""
        fd = _open_directory(self.path, follow_link=True)
        if fd is None:
            return None
        try:
            names = [entry.name for entry in os.scandir(fd)
                     if entry.name in self.RUN_NAMES or self.EXPORT_NAME.fullmatch(entry.name)
                     or self.EPOCH_NAME.fullmatch(entry.name)]
            if not {"config.json", "model.keras", "model.prev.keras"} & set(names):
                return None  # nothing trained here yet: nothing worth keeping
            aside = self._new_sibling()
            aside_fd = _open_directory(aside, follow_link=False)
            if aside_fd is None:
                raise RunDirError(f"could not open {aside} to move the previous run there")
            try:
                for name in names:
                    os.rename(name, name, src_dir_fd=fd, dst_dir_fd=aside_fd)
            finally:
                os.close(aside_fd)
            _fsync_dir(self.path)
            return aside
        except OSError as error:
            raise _explain(error, "move the previous run out of", self.path) from None
        finally:
            os.close(fd)

    def _new_sibling(self) -> Path:
        """A new, empty folder next to the run, named after it and the time (made with
        mkdir, which fails on anything already there, so nothing is ever reused)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for attempt in range(MAX_NEW_FILE_ATTEMPTS):
            suffix = f"-{attempt + 1}" if attempt else ""
            candidate = self.path.parent / f"{self.path.name}.prev-{stamp}{suffix}"
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                continue
        raise RunDirError(f"could not find a free name next to {self.path} for the previous run")

    def write_samples(self, name: str, text: str) -> Path:
        try:
            self.samples_dir.mkdir(exist_ok=True)
        except OSError as error:
            raise _explain(error, "create", self.samples_dir) from None
        if not _is_real_directory(self.samples_dir):
            raise RunDirError(f"could not write the samples: {self.samples_dir} is a link or not a folder")
        path = self.samples_dir / f"{name}.txt"
        atomic_write_bytes(path, text.encode("utf-8"))
        return path

    # -- the model ---------------------------------------------------------------------------
    def save_model(self, model) -> None:
        """Write model.keras atomically, keeping the previous checkpoint as model.prev.keras.

        A damaged model.keras is never rotated into model.prev.keras: the previous good
        checkpoint stays there. The sampler's sidecar is written beside it (engine/sidecar.py)."""
        from engine import sidecar

        weights = sidecar.weights_of(model)  # compared after the save: the sidecar holds what the file holds
        temporary = self.path / f".model-{os.getpid()}.tmp.keras"  # Keras wants the suffix
        memoize_keras_skipsets()
        try:
            with contextlib.suppress(FileNotFoundError):  # Keras opens it by name: no link may be there
                temporary.unlink()
            try:
                model.save(temporary)
            except Exception as error:  # Keras may wrap the OSError of a full disk
                raise _os_error_in(error) or RunDirError(
                    f"could not save the checkpoint {self.model_path}: {error}") from None
            fd = os.open(temporary, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            # Link, not move: model.keras never goes missing. A damaged one is not kept.
            if self.model_path.exists() and self._model_intact():
                previous_temporary = self.path / f".model-prev-{os.getpid()}.tmp"
                with contextlib.suppress(FileNotFoundError):
                    previous_temporary.unlink()
                os.link(self.model_path, previous_temporary)
                os.replace(previous_temporary, self.previous_model_path)
            os.replace(temporary, self.model_path)
        except (OSError, RunDirError) as error:
            with contextlib.suppress(OSError):
                temporary.unlink()
            if isinstance(error, RunDirError):
                raise
            raise _explain(error, "save the checkpoint", self.model_path) from None
        self._damaged_model = False
        _fsync_dir(self.path)
        sidecar.write_after_save(self, model, weights)

    def keep_best(self) -> None:
        """model.keras, just saved, has the lowest held-out loss so far: keep it as
        model.best.keras (with its sidecar)."""
        self._keep_as(self.best_model_path)

    def keep_epoch(self, epoch: int, keep_max: int) -> Path:
        """Keep model.keras, just saved at the end of `epoch`, as model.epoch-NNNN.keras
        (with its sidecar), and remove the oldest such files beyond `keep_max` (only those
        names, never through a link): a bound on the disk they take."""
        kept = self.path / f"model.epoch-{epoch:04d}.keras"
        self._keep_as(kept)
        epochs = sorted({int(match.group(1)) for match in map(self.EPOCH_NAME.fullmatch, os.listdir(self.path))
                         if match})
        old = set(epochs[:-keep_max]) if keep_max < len(epochs) else set()
        if old:
            _remove_names(self.path, lambda name: bool((match := self.EPOCH_NAME.fullmatch(name))
                                                       and int(match.group(1)) in old), follow_link=True)
        return kept

    def _keep_as(self, kept: Path) -> None:
        """A hard link of model.keras (whole and vetted: just saved) and its sidecar, renamed
        into place as `kept`: atomic, and no extra disk."""
        from engine import sidecar

        pairs = [(self.model_path, kept), (sidecar.sidecar_path(self.model_path), sidecar.sidecar_path(kept))]
        try:
            # The old best's sidecar goes first: a stale one must never sit beside the new best.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pairs[1][1])
            for source, target in pairs:
                if not os.path.lexists(source):
                    continue
                temporary = self.path / f".model-best-{os.getpid()}.tmp"
                with contextlib.suppress(FileNotFoundError):
                    temporary.unlink()
                os.link(source, temporary, follow_symlinks=False)
                os.replace(temporary, target)
        except OSError as error:
            raise _explain(error, "keep the checkpoint as", kept) from None
        _fsync_dir(self.path)

    def default_checkpoint(self) -> str:
        """What a reader samples from when not told: "best" (model.best.keras, the lowest
        held-out loss) once the run has stopped and kept one, since a run's last epochs
        may overfit; "latest" while a process trains it (the newest is what is watched)
        or where no best was kept."""
        return "best" if self.best_model_path.exists() and not self.in_training() else "latest"

    def in_training(self) -> bool:
        """Whether a process holds the run directory's lock now (read only: nothing written)."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)  # (drops the shared lock taken just to ask)
        return False

    def checkpoint_path(self, choice: str | None) -> Path:
        """`latest`, `best` or a FILE for `sample --checkpoint` (None: default_checkpoint)."""
        choice = choice or self.default_checkpoint()
        if choice == "latest":
            return self.model_path
        if choice == "best":
            if not self.best_model_path.exists():
                raise RunDirError(f"{self.path} has no model.best.keras yet (it is kept from the first "
                                  "epoch end with a held-out loss); use --checkpoint latest")
            return self.best_model_path
        return Path(choice)

    _damaged_model = False  # set when load_model found model.keras unloadable

    def _model_intact(self) -> bool:
        return not self._damaged_model and archive_problem(self.model_path) is None

    def load_model(self, compile: bool = True, on_notice=None):
        """The newest loadable checkpoint (safe_mode: nothing in it is executed).

        If model.keras is damaged and model.prev.keras loads, `on_notice(message)` is told
        so; neither file is changed or deleted."""
        from engine.tfsetup import keras

        # The archive is checked against the run's settings before Keras (or TensorFlow) is
        # even imported: a hostile file costs neither memory nor time.
        config, vocab = self.load_config(), self.load_vocab()
        errors = []
        for path in (self.model_path, self.previous_model_path):
            if not os.path.lexists(path):
                continue
            try:
                problem = archive_problem(path, config, len(vocab))
                if problem:
                    raise ValueError(problem)
                keras()
                memoize_keras_skipsets()
                model = keras().saving.load_model(path, safe_mode=True, compile=compile)
            except Exception as error:  # any failure to load is reported, never executed around
                errors.append(f"{path.name}: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
                if path == self.model_path:
                    self._damaged_model = True
                continue
            if path != self.model_path and on_notice is not None:
                on_notice(fallback_notice(errors[0] if errors else "model.keras: missing"))
            return model
        if not errors:
            raise RunDirError(f"{self.path} has no checkpoint (model.keras) yet")
        raise RunDirError(f"no loadable checkpoint in {self.path} ({'; '.join(errors)})")

    def load_sampler(self, on_notice=None, rebuild_sidecar: bool = True):
        """(Sampler, parameter count) for the newest loadable checkpoint, like load_model,
        but without TensorFlow when the checkpoint's numpy sidecar matches it.

        Otherwise Keras loads the checkpoint (vetted, safe mode) and, if `rebuild_sidecar`,
        the directory is writable and no trainer holds it, the sidecar is rebuilt for the
        next reader. `on_notice(message)` is told if model.prev.keras was used. Raises
        RunDirError as load_model does, and if the model cannot be sampled."""
        from engine import sidecar

        return sidecar.load_sampler(self, on_notice=on_notice, rebuild=rebuild_sidecar)

    def cleanup_temporaries(self) -> None:
        """Remove temp files a killed process left behind (only the names we give them)."""
        for folder, follow_link in ((self.path, True), (self.samples_dir, False)):
            with contextlib.suppress(RunDirError):
                _remove_names(folder, lambda name: bool(TEMPORARY_NAME.fullmatch(name)), follow_link=follow_link)


def fallback_notice(why: str) -> str:
    """What a reader is told when model.keras could not be used and model.prev.keras was."""
    return (f"could not load the latest checkpoint ({why}); using the previous one, "
            f"model.prev.keras, instead (both files are kept)")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _os_error_in(error: BaseException) -> OSError | None:
    """The OSError behind a wrapped exception, if any (a full disk inside Keras's saving)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _check_config_types(data: dict) -> None:
    """Raise ValueError unless every known field of config.json has its field's JSON type
    (TrainConfig.from_json converts and range-checks; this stops "8" or true first)."""
    import dataclasses

    kinds = {
        "str": lambda v: isinstance(v, str),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": _is_number,
        "bool": lambda v: isinstance(v, bool),
        "dict": lambda v: isinstance(v, dict),
        "tuple[float, ...]": lambda v: isinstance(v, list) and all(_is_number(t) for t in v),
    }
    for field in dataclasses.fields(TrainConfig):
        if field.name not in data:
            continue
        annotation = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
        optional = annotation.endswith(" | None")
        check = kinds.get(annotation.removesuffix(" | None"))
        value = data[field.name]
        if check is None or (optional and value is None):
            continue  # a field this check does not know about is left to from_json
        if not check(value):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            expected = "list of numbers" if annotation.startswith("tuple") else annotation
            raise ValueError(f"{field.name} is {shown}, not {expected}")


def read_metrics(run_dir) -> list[dict]:
    """Every complete row of metrics.jsonl (a torn or foreign line is skipped)."""
    return list(iter_metrics(Path(run_dir) / "metrics.jsonl"))


def iter_metrics(path) -> Iterator[dict]:
    """The JSON-object rows of a metrics.jsonl file, read a chunk at a time: memory does
    not depend on the file's length. A missing file has no rows."""
    for _line, row in _metrics_lines(path):
        yield row


def _metrics_lines(path) -> Iterator[tuple[bytes, dict]]:
    """(line, row) for each line of the file that is a JSON object (see iter_metrics)."""
    path = Path(path)
    try:
        handle = open_run_file(path)
    except FileNotFoundError:
        return
    with handle:
        lines = _LineSplitter()
        while True:
            try:
                chunk = handle.read(READ_CHUNK_BYTES)
            except OSError as error:
                raise _explain(error, "read", path) from None
            complete = lines.feed(chunk) if chunk else lines.finish()
            for line in complete:
                row = _parse_row(line)
                if row is not None:
                    yield line, row
            if not chunk:
                return


class _LineSplitter:
    """Cuts a byte stream into lines, holding at most MAX_METRICS_LINE_BYTES of a line
    not yet finished: a longer line is dropped as it comes, up to its newline."""

    def __init__(self) -> None:
        self.partial = b""
        self.skipping = False  # inside a line too long to keep

    def feed(self, data: bytes) -> list[bytes]:
        """The lines that `data` finishes (without their newlines)."""
        *finished, rest = data.split(b"\n")
        lines = []
        for piece in finished:
            line, self.partial = self.partial + piece, b""
            if self.skipping:
                self.skipping = False  # that was the end of the long line
            elif len(line) <= MAX_METRICS_LINE_BYTES:
                lines.append(line)
        if not self.skipping:
            self.partial += rest
            if len(self.partial) > MAX_METRICS_LINE_BYTES:
                self.partial, self.skipping = b"", True
        return lines

    def finish(self) -> list[bytes]:
        """At the end of the file: the last line, if it has no newline (a row whose write
        was torn does not parse and is skipped by the callers)."""
        line, self.partial = self.partial, b""
        return [line] if line and not self.skipping else []


def _parse_row(line: bytes) -> dict | None:
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return row if isinstance(row, dict) else None


class MetricsTail:
    """Follows metrics.jsonl while another process appends to it. Each poll() reads at
    most `chunk_bytes` more, so a watcher's memory stays bounded however large the file
    is or grows (a long file is caught up over several polls)."""

    def __init__(self, path: Path, chunk_bytes: int = READ_CHUNK_BYTES) -> None:
        self.path = Path(path)
        self.chunk_bytes = chunk_bytes
        self._forget()

    def _forget(self) -> None:
        self.offset, self.lines = 0, _LineSplitter()
        self.inode: int | None = None
        self.size = self.mtime = -1

    @property
    def pending(self) -> bool:
        """Whether the file held more than the last poll read (poll again to catch up)."""
        return self.offset < self.size

    def poll(self) -> tuple[list[dict], bool]:
        """(new rows, reset): reset when the file was rewritten or replaced (a resumed
        run trims it, a fresh run clears it): the rows are then read from its start."""
        try:
            handle = open_run_file(self.path)
        except FileNotFoundError:
            reset = self.offset > 0
            self._forget()
            return [], reset
        with handle:
            info = os.fstat(handle.fileno())
            if (info.st_ino, info.st_size, info.st_mtime_ns) == (self.inode, self.size, self.mtime) \
                    and self.offset >= info.st_size:
                return [], False
            reset = (self.inode is not None and info.st_ino != self.inode) or info.st_size < self.offset
            if reset:
                self._forget()
            self.inode, self.size, self.mtime = info.st_ino, info.st_size, info.st_mtime_ns
            handle.seek(self.offset)
            data = handle.read(self.chunk_bytes)
        self.offset += len(data)
        rows = [row for row in map(_parse_row, self.lines.feed(data))
                if row is not None and isinstance(row.get("step"), int)]
        return rows, reset


def load_config(run_dir) -> TrainConfig:
    return RunDir(run_dir).load_config()


def load_vocab(run_dir) -> tuple[str, ...]:
    return RunDir(run_dir).load_vocab()
