"""Output that outlives its terminal or its pipe.

A terminal that went away (a closed window, a dropped SSH session) fails every later
write with EIO; a pipe whose reader has exited (`| head`, `| tee` killed by Ctrl-C) fails
it with EPIPE, which Python raises as BrokenPipeError (it ignores SIGPIPE). Neither is a
reason for a traceback, nor for losing work: `train` saves a checkpoint and leaves, the
other commands just leave. Both end like the signal a shell would have sent: 129 (SIGHUP)
for a terminal gone, 141 (SIGPIPE) for a pipe closed early.

Python's own advice (the note on SIGPIPE in the `signal` module's docs): catch
BrokenPipeError, point standard output at /dev/null so that the interpreter's last flush
cannot fail again, and exit.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading
from collections.abc import Callable

# errno of a write -> the signal a shell would have reported for it
LOST = {errno.EPIPE: signal.SIGPIPE, errno.EIO: signal.SIGHUP}


def lost_output(error: BaseException) -> signal.Signals | None:
    """The signal that a failed write stands for (SIGPIPE, SIGHUP), or None when the
    error is not a vanished reader."""
    return LOST.get(getattr(error, "errno", None)) if isinstance(error, OSError) else None


def silence(*fds: int) -> None:
    """Point these file descriptors at /dev/null: later writes to them, the
    interpreter's last flush included, succeed and go nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in fds:
        with contextlib.suppress(OSError):
            os.dup2(devnull, fd)
    os.close(devnull)


def output_gone(error: OSError) -> int:
    """After a write failed because the reader is gone: silence stdout and stderr, and
    return the exit code a shell would show for the signal it stands for."""
    silence(1, 2)
    return 128 + int(lost_output(error) or signal.SIGPIPE)


def print_safely(*objects, file=None, **kwargs) -> bool:
    """print(), but a terminal or pipe that went away only makes it return False."""
    try:
        print(*objects, file=file if file is not None else sys.stdout, flush=True, **kwargs)
        return True
    except OSError as error:
        if lost_output(error) is None:
            raise
        return False


class Guarded:
    """A text stream whose writes cannot fail because its reader went away: the first
    such failure calls `on_lost(signal)` (once; SIGHUP for EIO, SIGPIPE for EPIPE),
    points the descriptor at /dev/null and makes every later write a no-op. Anything
    else (isatty, fileno, encoding...) is the stream's own, so rich treats it as it
    would the stream."""

    def __init__(self, stream, on_lost: Callable[[signal.Signals], None] | None = None):
        self._stream = stream
        self._on_lost = on_lost
        self._lock = threading.Lock()
        self.lost: signal.Signals | None = None
        # Asked once: a terminal that has hung up answers isatty() False, and rich would
        # then stop drawing its progress bar, the writes that find out it is gone.
        try:
            self._terminal = bool(getattr(stream, "isatty", lambda: False)())
        except (OSError, ValueError):
            self._terminal = False

    def write(self, text: str) -> int:
        if self.lost is None:
            try:
                return self._stream.write(text)
            except OSError as error:
                self._lose(error)
        return len(text)

    def flush(self) -> None:
        if self.lost is None:
            try:
                self._stream.flush()
            except OSError as error:
                self._lose(error)

    def isatty(self) -> bool:
        return self.lost is None and self._terminal

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def _lose(self, error: OSError) -> None:
        which = lost_output(error)
        if which is None:
            raise error
        with self._lock:
            if self.lost is not None:
                return
            self.lost = which
        with contextlib.suppress(OSError, ValueError):
            silence(self._stream.fileno())
        if self._on_lost is not None:
            self._on_lost(which)
