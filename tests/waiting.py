"""One way for a test to wait: poll a condition until it holds, or fail once `timeout`
seconds have passed saying what was awaited and what was seen. Never a fixed sleep:
a loaded machine only makes the wait longer, a fast one never waits for nothing.

    wait_for(condition, timeout, what)              from a thread (a terminal, a process)
    await wait_for_app(pilot, condition, timeout)   in a Pilot test: the app runs meanwhile
"""

from __future__ import annotations

import time

POLL = 0.05  # seconds between looks


def _timed_out(timeout: float, what: str, seen: str) -> AssertionError:
    return AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                          + (f"; seen: {seen}" if seen else ""))


def wait_for(condition, timeout: float, what: str = "the condition", describe=lambda: ""):
    """condition()'s first true value, polled every POLL seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what, describe())
        time.sleep(POLL)
    return value


async def wait_for_app(pilot, condition, timeout: float = 120.0, what: str = "the condition",
                       describe=lambda: ""):
    """The same, letting the app under `pilot` run between looks."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what, describe())
        await pilot.pause(POLL)
    return value
