"""The clock of a run: seconds of training, pauses and stopped processes left out."""

from __future__ import annotations

import threading
import time


class TrainingClock:
    """Seconds of training, accumulated across resumes, counting neither pauses nor time
    the process could not run (stopped by SIGSTOP or Ctrl-Z, a suspended machine).

    CLOCK_MONOTONIC leaves out a suspend on Linux, but goes on while a process is stopped.
    A SIGCONT handler cannot tell us (Python runs handlers on the main thread only, the
    app trains on a worker thread, and Textual has its own), a gap between two batch ends
    cannot either (the first batch traces, an epoch end evaluates, a GPU step may take
    seconds), and process_time() counts every thread's CPU, not seconds of training. So a
    heartbeat thread that only sleeps notes the time every HEARTBEAT seconds (readers of
    `elapsed` note it too, so the first read after a SIGCONT is right): it can be late only
    if the whole process did not run, or if another thread held the GIL inside C code. A
    gap over STOPPED_AFTER in which the process used less CPU than CPU_FRACTION of it is
    the first kind, and its excess is taken off the clock; in the second the holder was
    running, using the CPU, and the gap counts."""

    HEARTBEAT = 0.1
    STOPPED_AFTER = 1.0
    CPU_FRACTION = 0.25

    def __init__(self, already: float = 0.0):
        self._lock = threading.Lock()
        self._already = float(already)
        self._since: float | None = time.monotonic()
        self._last_note = (self._since, time.process_time())
        self._closed = threading.Event()
        threading.Thread(target=self._heartbeat, name="charlm-clock", daemon=True).start()

    def _heartbeat(self) -> None:
        while not self._closed.wait(self.HEARTBEAT):
            self._note_time()

    def _note_time(self) -> None:
        """Take the time since the last note off the clock if the process was stopped."""
        with self._lock:
            now, cpu = time.monotonic(), time.process_time()
            (last_now, last_cpu), self._last_note = self._last_note, (now, cpu)
            gap = now - last_now
            if self._since is None or gap <= self.STOPPED_AFTER or cpu - last_cpu >= self.CPU_FRACTION * gap:
                return
            self._since = min(now, self._since + gap - self.HEARTBEAT)

    @property
    def elapsed(self) -> float:
        self._note_time()
        with self._lock:
            running = time.monotonic() - self._since if self._since is not None else 0.0
            return self._already + running

    def pause(self) -> None:
        self._note_time()
        with self._lock:
            if self._since is not None:
                self._already += time.monotonic() - self._since
                self._since = None

    def resume(self) -> None:
        with self._lock:
            if self._since is None:
                self._since = time.monotonic()

    def close(self) -> None:
        """Stop the heartbeat thread."""
        self._closed.set()
