"""How a front end ends when told to (a signal) or when its terminal goes away, within
a bounded time whatever blocks.

Ctrl-C, SIGTERM and SIGHUP, and a terminal found gone without a signal (a write failing
with EIO or EPIPE, input at its end), all arrive here as a signal number. The first one
stops the run (after the current batch, with a checkpoint) and tells the front end,
which shows it and shuts down. From then on a watchdog counts:

* the run has until STOP_DEADLINE seconds after the stop to save its checkpoint and
  end. A step that cannot end in time (a huge batch) is abandoned: its end row is
  written with the step of the last checkpoint, which is whole on disk because every
  file is replaced atomically, the run directory is released, and the process leaves
  saying so;
* once the run has ended, the front end has UI_GRACE seconds to shut down. A UI library
  blocked on a terminal that is gone (Textual's writer queue, see tui/compat.py) is
  not waited for: the process leaves, and the log says why.

A second Ctrl-C or SIGTERM leaves at once, the same way. The exit code is 128 + the first signal:
129 (SIGHUP, or a terminal gone), 130 (Ctrl-C), 141 (a pipe closed), 143 (SIGTERM).

The signal handlers only queue the number (queue.SimpleQueue.put may be called from a
signal handler); everything else happens on the lifeline's own thread, so a handler
never waits for a lock the interrupted code holds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger("charlm")

STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOP_DEADLINE = 7.5  # seconds from the stop to the end of the run's checkpoint
UI_GRACE = 2.0       # seconds the front end then has to shut down
# Under --strategy multiworker every worker stops after the same step, agreed with the
# next step's collective: a worker that left first would cost the others theirs.
MULTIWORKER_STOP_DEADLINE = 60.0


class Lifeline:
    """Stops `session()` (a RunSession, or None while there is none) on the first signal
    and makes sure the process leaves; see the module's docstring."""

    def __init__(self, session: Callable[[], object], on_stop: Callable[[int], None] | None = None,
                 say: Callable[[str], None] | None = None, before_leaving: Callable[[], None] | None = None):
        self._session = session
        self._on_stop = on_stop or (lambda signum: None)
        self._say = say or (lambda message: None)
        self._before_leaving = before_leaving or (lambda: None)
        self._requests: queue.SimpleQueue[tuple[int, bool]] = queue.SimpleQueue()
        self._previous: dict[int, object] = {}
        self.signum: int | None = None
        self.stop_deadline = STOP_DEADLINE  # seconds the run has to end once stopped
        self.deadline: float | None = None  # time.monotonic() by which the run must have ended
        self.ended = threading.Event()      # the front end has shut down: no need to force it
        threading.Thread(target=self._watch, name="charlm-lifeline", daemon=True).start()

    @property
    def exit_code(self) -> int | None:
        return None if self.signum is None else 128 + int(self.signum)

    # -- how stops arrive -----------------------------------------------------------------
    def request(self, signum: int) -> None:
        """Stop as if `signum` had come (from any thread): a terminal or pipe found gone
        (SIGHUP, SIGPIPE). It never counts as a second signal: a terminal that goes away
        says so several times (SIGHUP, failing writes, the end of input)."""
        self._requests.put((int(signum), False))

    def install(self) -> None:
        """On the main thread: Ctrl-C, SIGTERM and SIGHUP call request. A SIGHUP that
        this process was started ignoring (nohup) stays ignored."""
        for signum in STOPPING_SIGNALS:
            previous = signal.getsignal(signum)
            if signum == signal.SIGHUP and previous is signal.SIG_IGN:
                continue
            self._previous[signum] = signal.signal(signum, self._handler)

    def uninstall(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _handler(self, signum, frame) -> None:
        self._requests.put((int(signum), True))

    # -- the watchdog -----------------------------------------------------------------------
    def _watch(self) -> None:
        signum, _ = self._requests.get()
        self.signum = signum
        self.deadline = time.monotonic() + self.stop_deadline
        session = self._session()
        if session is not None:
            session.on_signal(signum)
        try:
            self._on_stop(signum)
        except Exception:  # (an app not running yet): the watchdog below still ends it
            log.exception("could not tell the front end to stop")
        if not self._wait_for_the_run():
            return
        second = self._second_request(timeout=UI_GRACE)
        if second is None and self.ended.is_set():
            return  # the front end has shut down and is leaving by itself
        if second is None:
            log.warning("the run has ended but the interface did not shut down within %.1f s "
                        "(a terminal that is gone?): leaving without it", UI_GRACE)
        self.leave()

    def _wait_for_the_run(self) -> bool:
        """Wait until the current run has ended (True), or leave: at the deadline, or at a
        second signal."""
        while True:
            session = self._session()
            if session is None or session.done.is_set():
                return True
            left = self.deadline - time.monotonic()
            if left <= 0:
                self._abandon(session, f"the step under way did not end within {self.stop_deadline:g} s "
                                       f"of {_name(self.signum)}")
            second = self._second_request(timeout=min(left, 0.1))
            if second is not None:
                self._abandon(session, f"a second signal ({_name(second)})")

    def _second_request(self, timeout: float) -> int | None:
        """A second Ctrl-C or SIGTERM within `timeout` seconds (None: none came). Another
        SIGHUP, or a report of a terminal gone, is the same hangup again."""
        end = time.monotonic() + max(timeout, 0.0)
        while True:
            try:
                signum, by_signal = self._requests.get(timeout=max(end - time.monotonic(), 0.0))
            except queue.Empty:
                return None
            if by_signal and signum != signal.SIGHUP:
                return signum

    def _abandon(self, session, why: str) -> None:
        step = session.abandon()
        saved = "no checkpoint was saved yet" if step is None else f"the checkpoint of step {step:,} is whole"
        message = f"{why}: leaving without saving it ({saved})"
        log.warning(message)
        self._say(message)
        self.leave()

    def leave(self) -> None:
        """Leave now with the exit code of the first signal: TensorFlow's scratch files
        removed, logs flushed, the terminal given back if the front end can."""
        with contextlib.suppress(Exception):
            self._before_leaving()
        with contextlib.suppress(Exception):
            from engine.tfsetup import remove_temporary_files

            remove_temporary_files()
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(self.exit_code or 1)


def _name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
