"""The one place where the front ends lean on a library's behaviour that has no public
API. Each use has a test in tests/test_compat.py that fails with a clear message when
the library changes.

* Textual's Linux driver draws on `sys.__stderr__` (read when the app starts), and
  offers no option to draw elsewhere. TensorFlow's C++ code writes log lines straight
  to file descriptor 2, which would corrupt the screen; so while the app runs, fd 2 goes
  to a log file and `sys.__stderr__` to a duplicate of the terminal's descriptor.
* A terminal that goes away must not hang the app. Textual's writer thread dies at the
  first write that fails (EIO once the terminal has hung up), after which its bounded
  queue fills and every later write blocks the event loop for good, shutdown included
  (WriterThread.stop puts into that queue): so the stream it draws on swallows those
  failures and reports the terminal gone (tui/streams.py Guarded). Textual's input
  thread reads its terminal again and again once the input has ended (a read of b""
  leaves one batch of events, and a closed input is always readable: 100% of a core,
  forever; upstream: Textualize/textual#6690): `terminal_driver` is its Linux driver
  with an input loop that reports the end of input once and stops reading.
* If Textual cannot shut down anyway, the process leaves without it (tui/lifeline.py);
  `TerminalModes.restore` then gives the terminal back as Textual's own shutdown would.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import sys
import termios
import threading
from codecs import getincrementaldecoder
from collections.abc import Callable
from pathlib import Path

from tui.streams import Guarded

log = logging.getLogger("charlm")

# What Textual's LinuxDriver turns on and its stop_application_mode turns off again: the
# kitty keyboard protocol, the alternate screen, a hidden cursor, focus and mouse
# reporting, bracketed paste; and line wrapping, which it turns off.
RESET_SEQUENCES = ("\x1b[<u\x1b[?1049l\x1b[?25h\x1b[?1004l\x1b[?1000l\x1b[?1003l\x1b[?1015l"
                   "\x1b[?1006l\x1b[?1016l\x1b[?2004l\x1b[?2048l\x1b[?7h")


class TerminalModes:
    """The terminal as it was before the app (its input settings), to give it back by
    hand when Textual cannot: the watchdog's last act before leaving."""

    def __init__(self, output_fd: int | None):
        self.output_fd = output_fd
        self.input_fd = sys.__stdin__.fileno() if sys.__stdin__ is not None else None
        try:
            self.input_attributes = termios.tcgetattr(self.input_fd) if self.input_fd is not None else None
        except (termios.error, OSError, ValueError):
            self.input_attributes = None

    def restore(self) -> None:
        if self.output_fd is not None:  # (a terminal that reads no more cannot hold us)
            writer = threading.Thread(target=self._reset, args=(self.output_fd,), daemon=True)
            writer.start()
            writer.join(0.2)
        if self.input_attributes is not None:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(self.input_fd, termios.TCSANOW, self.input_attributes)

    @staticmethod
    def _reset(fd: int) -> None:
        with contextlib.suppress(OSError):
            os.write(fd, RESET_SEQUENCES.encode())


@contextlib.contextmanager
def stderr_to_log(log_path: Path, on_lost: Callable[[int], None] | None = None):
    """Point fd 2 at a log file while the app runs, so C++ writes from TensorFlow cannot
    corrupt the screen; Textual draws on a duplicate of the terminal's descriptor, whose
    failed writes call `on_lost(SIGHUP)` instead of killing Textual's writer thread.
    Yields the terminal's modes (TerminalModes) to restore by hand if need be."""
    stream = sys.__stderr__
    try:
        terminal_fd = stream.fileno() if stream is not None else None
    except (OSError, ValueError):
        terminal_fd = None
    if terminal_fd is None or not os.isatty(terminal_fd):
        yield TerminalModes(None)  # not a terminal (piped, tests): nothing to protect
        return
    try:  # a new file of our own (never through a link someone left in the temp folder)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        log_file = os.fdopen(fd, "w", encoding="utf-8", buffering=1)
    except OSError:
        log_file = open(os.devnull, "w", encoding="utf-8")
    saved_fd = os.dup(terminal_fd)
    drawing = os.fdopen(os.dup(terminal_fd), "w", encoding=stream.encoding or "utf-8",
                        errors="replace", buffering=1)
    modes = TerminalModes(drawing.fileno())
    os.dup2(log_file.fileno(), terminal_fd)
    sys.__stderr__ = Guarded(drawing, on_lost)  # Textual's Linux driver writes to sys.__stderr__
    handler = logging.StreamHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    try:
        yield modes
    finally:
        log.removeHandler(handler)
        with contextlib.suppress(OSError, ValueError):
            drawing.flush()
        os.dup2(saved_fd, terminal_fd)
        os.close(saved_fd)
        modes.output_fd = terminal_fd  # (the duplicate is closed below)
        sys.__stderr__ = stream
        with contextlib.suppress(OSError, ValueError):
            drawing.close()
        log_file.close()


def terminal_driver(on_input_end: Callable[[], None]):
    """Textual's Linux driver, reading input until it ends (a terminal gone, stdin
    closed), then calling `on_input_end()` once and reading no more (see the module's
    docstring). None where Textual would use another driver (Windows)."""
    if sys.platform == "win32":
        return None
    from textual._xterm_parser import XTermParser
    from textual.drivers.linux_driver import LinuxDriver

    class InputEndingDriver(LinuxDriver):
        def run_input_thread(self) -> None:
            """LinuxDriver.run_input_thread, but an empty or failing read ends the input."""
            selector = selectors.SelectSelector()
            selector.register(self.fileno, selectors.EVENT_READ)
            parser = XTermParser(self._debug)
            decode = getincrementaldecoder("utf-8")().decode
            try:
                while not self.exit_event.is_set():
                    if selector.select(0.1) and not self._read_input(parser, decode):
                        log.warning("the terminal's input has ended")
                        on_input_end()
                        self.exit_event.wait()
                        return
                    for event in parser.tick():
                        self.process_message(event)
            finally:
                selector.close()

        def _read_input(self, parser, decode) -> bool:
            """Read what the terminal has and pass its events on; False at the end."""
            try:
                data = os.read(self.fileno, 4096)
            except OSError:  # EIO: the terminal has gone away
                return False
            if not data:
                return False
            for event in parser.feed(decode(data)):
                self.process_message(event)
            return True

    return InputEndingDriver
