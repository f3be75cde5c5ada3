"""Run a command in a real pseudo-terminal (Python's pty) and keep every byte it wrote.

What a user's terminal receives is what matters for some tests (control sequences from
a corpus, a command that must not hang): a pipe would not show it, since programs
write differently to a terminal.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class PtyResult:
    code: int | None  # None: still running at the deadline (then killed)
    output: bytes

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")


def charlm_command() -> list[str]:
    """The installed `charlm-tui` script, as a user runs it (else the module)."""
    script = Path(sys.executable).parent / "charlm-tui"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tui.cli"]


def run_in_pty(argv: list[str], *, timeout: float = 120.0, env: dict | None = None, cwd=None,
               columns: int = 120, rows: int = 40, send: list[tuple[bytes, bytes]] = ()) -> PtyResult:
    """Run `argv` with a pty as its terminal (stdin, stdout and stderr), reading all it
    writes until it exits or `timeout` passes (then it is killed: code None). `send`:
    (wait for, keys) pairs in order: once the output since the last keys holds the
    first, the second is typed."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": str(columns),
                   "LINES": str(rows), "TERM": "xterm-256color", **(env or {})}
    pid, fd = pty.fork()
    if pid == 0:  # the child: its terminal is the pty, of this size
        try:
            import fcntl
            import struct
            import termios

            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
            if cwd is not None:
                os.chdir(cwd)
            os.execvpe(argv[0], argv, environment)
        finally:
            os._exit(127)
    output = bytearray()
    deadline = time.monotonic() + timeout
    status = None
    pending, since = list(send), 0
    try:
        while time.monotonic() < deadline:
            if pending and pending[0][0] in output[since:]:
                since = len(output)
                os.write(fd, pending.pop(0)[1])
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: every process holding the terminal has closed it
                    data = b""
                if data:
                    output += data
                    continue
                break
            finished, status = os.waitpid(pid, os.WNOHANG)
            if finished:
                output += _drain(fd)
                break
            status = None
        if status is None and time.monotonic() < deadline:
            status = _wait(pid, deadline)
    finally:
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    return PtyResult(os.waitstatus_to_exitcode(status) if status is not None else None, bytes(output))


def _wait(pid: int, deadline: float) -> int | None:
    while time.monotonic() < deadline:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            return status
        time.sleep(0.05)
    return None


def _drain(fd: int) -> bytes:
    data = bytearray()
    while select.select([fd], [], [], 0.05)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)
