"""Files on the user's disk, written and read without harm to anything else there.

Every file is written to a temporary name (created with O_EXCL, never through a link),
flushed to disk and renamed over the old one, so a kill at any moment leaves the
previous complete version in place, and a rename replaces a link, never its target.
Files charlm-tui did not write itself are read only as regular files, never through a
link, never blocking, and at most as large as charlm-tui could have written them: a run
directory may come from anywhere, and /dev/zero behind a link or a FIFO must not exhaust
memory or hang.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from engine.errors import RunDirError


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def explain_os_error(error: OSError, action: str, path: Path) -> RunDirError:
    reason = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
              errno.EACCES: "permission denied", errno.EDQUOT: "the disk quota is exceeded",
              errno.EFBIG: "the file size limit is reached (ulimit -f)",
              errno.ELOOP: "it is a symbolic link, and charlm-tui does not write through links",
              errno.ENXIO: "it is not a regular file"}
    return RunDirError(f"could not {action} {path}: {reason.get(error.errno, error.strerror or str(error))}")



MAX_NEW_FILE_ATTEMPTS = 1000


def create_exclusive(path: Path) -> int:
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
            fd = create_exclusive(temporary)
        except FileExistsError:  # left by a killed process that had our pid: ours to remove
            temporary.unlink()   # (unlink removes a link itself, never its target)
            fd = create_exclusive(temporary)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise explain_os_error(error, "write", path) from None
    fsync_dir(path.parent)


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
        raise explain_os_error(error, "create", folder) from None
    for attempt in range(1, MAX_NEW_FILE_ATTEMPTS + 1):
        path = folder / (f"{name}.txt" if attempt == 1 else f"{name}-{attempt}.txt")
        try:
            os.close(create_exclusive(path))
        except FileExistsError:
            continue
        except OSError as error:
            raise explain_os_error(error, "write", path) from None
        try:
            atomic_write_bytes(path, text.encode("utf-8"))
        except RunDirError:
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        return path
    raise RunDirError(f"could not write {folder / name}.txt: {MAX_NEW_FILE_ATTEMPTS} files of that name "
                      "are there already")



def is_real_directory(path: Path) -> bool:
    """A directory of its own: not a link to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def open_directory(path: Path, *, follow_link: bool) -> int | None:
    """A descriptor for the directory `path` (None if it is not one, or is a link and
    `follow_link` is false), so the names read and removed through it stay in it."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | (0 if follow_link else os.O_NOFOLLOW)
    try:
        return os.open(path, flags)
    except OSError:
        return None


def remove_names(folder: Path, wanted, *, follow_link: bool = False) -> None:
    """Remove the files (or links: unlink never touches a target) in `folder` itself whose
    names `wanted` accepts. A `folder` that is a link is left alone unless `follow_link`
    (the run directory itself, which --run may name through a link)."""
    fd = open_directory(folder, follow_link=follow_link)
    if fd is None:
        return
    try:
        for entry in os.scandir(fd):
            if wanted(entry.name) and not entry.is_dir(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.name, dir_fd=fd)
    except OSError as error:
        raise explain_os_error(error, "remove old files in", folder) from None
    finally:
        os.close(fd)


MAX_JSON_BYTES = 4 << 20           # config.json, vocab.json, state.json (ours: a few KB)
READ_CHUNK_BYTES = 1 << 20         # metrics.jsonl is read this much at a time


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


@contextlib.contextmanager
def _told_as_run_dir_errors(path) -> Iterator[None]:
    """Refusals of a run file as RunDirError; FileNotFoundError passes through: callers
    say what missing means."""
    try:
        yield
    except FileNotFoundError:
        raise
    except NotRegularFile as error:
        raise _refuse_irregular(error.path, error.kind) from None
    except FileTooLarge as error:
        raise _refuse_too_large(error) from None
    except OSError as error:
        raise explain_os_error(error, "read", Path(path)) from None


def open_run_file(path: Path, max_bytes: int | None = None):
    """A run file opened for binary reading (see open_regular_file), its refusals told
    as RunDirError. FileNotFoundError passes through: callers say what missing means."""
    with _told_as_run_dir_errors(path):
        return open_regular_file(path, max_bytes)


def read_run_file(path: Path, max_bytes: int = MAX_JSON_BYTES) -> bytes:
    """The whole of a small run file (see open_run_file); FileNotFoundError passes through."""
    with _told_as_run_dir_errors(path):
        return read_regular_file(path, max_bytes)


def read_json(path: Path):
    try:
        raw = read_run_file(path)
    except FileNotFoundError:
        raise RunDirError(f"{path} is missing: is {path.parent} a charlm-tui run directory?") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise RunDirError(f"{path} is damaged or not JSON ({error})") from None



def os_error_in(error: BaseException) -> OSError | None:
    """The OSError behind a wrapped exception, if any (a full disk inside Keras's saving)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
