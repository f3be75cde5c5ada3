"""metrics.jsonl read and followed: one JSON object per logging interval and per epoch.

The file is append-only, one whole line per write; a torn last line (kill -9 mid-write
on a full disk) is ignored here and cut off on resume. It is read a chunk at a time, so
memory does not depend on its length, and lines far longer than ours are skipped unread.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from engine.config import is_finite_number
from engine.errors import RunDirError
from engine.files.safeio import READ_CHUNK_BYTES, explain_os_error, fsync_dir, open_run_file

MAX_METRICS_LINE_BYTES = 64 << 10  # our rows are ~300 bytes; longer lines are skipped unread


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
                raise explain_os_error(error, "read", path) from None
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

def append_row(path: Path, row: dict) -> None:
    """Append one row as one whole line, in one write: a reader never sees half of it."""
    line = (json.dumps(row, sort_keys=True) + "\n").encode()
    try:  # never through a link; O_NONBLOCK: a FIFO there fails instead of hanging
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(path, flags, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError as error:
        raise explain_os_error(error, "append to", path) from None


def keep_rows_up_to(path: Path, step: int) -> None:
    """On resume: drop rows logged after the checkpoint's `step` (they will be redone), and
    the lives that began at the checkpoint and saved nothing after it (killed, or stopped
    at once), start rows included: the session resuming now starts there again, once.

    Streamed: the lines of the rows kept are copied as they are into a temporary file
    that then replaces the file, so memory does not depend on the file's length and the
    file never grows (torn, foreign and absurdly long lines go)."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()  # left by a killed process that had our pid
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as kept:
            redone = False  # from a start row at the checkpoint's step on
            for line, row in _metrics_lines(path):
                if not is_finite_number(row.get("step")) or row["step"] > step:
                    continue
                redone = redone or (row["step"] == step and row.get("kind") == "start")
                if not (redone and row["step"] == step):
                    kept.write(line + b"\n")
            kept.flush()
            os.fsync(kept.fileno())
        os.replace(temporary, path)
    except (OSError, RunDirError) as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        if isinstance(error, RunDirError):
            raise
        raise explain_os_error(error, "rewrite", path) from None
    fsync_dir(path.parent)
