"""The one place where the front ends lean on a library's behaviour that has no public
API. Each use has a test in tests/test_compat.py that fails with a clear message when
the library changes.

* Textual's Linux driver draws on `sys.__stderr__` (read when the app starts), and
  offers no option to draw elsewhere. TensorFlow's C++ code writes log lines straight
  to file descriptor 2, which would corrupt the screen; so while the app runs, fd 2 goes
  to a log file and `sys.__stderr__` to a duplicate of the terminal's descriptor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("charlm")


@contextlib.contextmanager
def stderr_to_log(log_path: Path):
    """Point fd 2 at a log file while the app runs, so C++ writes from TensorFlow cannot
    corrupt the screen; Textual draws on a duplicate of the terminal's descriptor."""
    stream = sys.__stderr__
    try:
        terminal_fd = stream.fileno() if stream is not None else None
    except (OSError, ValueError):
        terminal_fd = None
    if terminal_fd is None or not os.isatty(terminal_fd):
        yield  # not a terminal (piped, tests): nothing to protect
        return
    try:  # a new file of our own (never through a link someone left in the temp folder)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        log_file = os.fdopen(fd, "w", encoding="utf-8", buffering=1)
    except OSError:
        log_file = open(os.devnull, "w", encoding="utf-8")
    saved_fd = os.dup(terminal_fd)
    drawing = os.fdopen(os.dup(terminal_fd), "w", encoding=stream.encoding or "utf-8",
                        errors="replace", buffering=1)
    os.dup2(log_file.fileno(), terminal_fd)
    sys.__stderr__ = drawing  # Textual's Linux driver writes to sys.__stderr__
    handler = logging.StreamHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        with contextlib.suppress(OSError, ValueError):
            drawing.flush()
        os.dup2(saved_fd, terminal_fd)
        os.close(saved_fd)
        sys.__stderr__ = stream
        with contextlib.suppress(OSError, ValueError):
            drawing.close()
        log_file.close()
