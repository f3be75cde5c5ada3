"""Every way a terminal goes away, at every phase of a run, for `train` and the app.

A terminal goes away in three ways (tests/terminal.py makes each with a real pty):

* hangup: a closed window, a dropped SSH session: SIGHUP, then EIO on every write and
  end-of-file on every read;
* no signal: the same, but the process is never told (its SIGHUP is blocked, as for a
  process the dying shell did not tell): only failing writes and the end of input say so;
* end of input: standard input reaches its end while the screen stays (the app only:
  `train` reads no input, and a `train` under nohup has none).

Whatever the phase the run is in when it happens (start-up, the first step's tracing,
mid-epoch, the held-out scoring, the sample round, a checkpoint being written, an epoch
end, the app's own quit), the process must save a checkpoint of the step it reached
(once training had begun), write the run's end row, release the run directory, leave
within GONE_WITHIN seconds with 129 (as for SIGHUP), print no traceback, and leave
nothing running or behind.

The matrix: each front end meets every phase under the hangup (the common case); how a
stop is honoured depends on the phase, which is the engine's, shared by both front
ends. The other two ways differ only in how the stop arrives, so they are checked at
the phases where the front end is in a different state: before training, while
training, and (the app) while quitting. Without a signal, `train` learns that its
terminal is gone at its next write (its progress bar writes ten times a second), which
TensorFlow's import delays: it holds the interpreter for seconds at a time, more on a
busy machine, so that case has no 10 s bound to check. Phases are reached on cue with the tiny real
engine: the phase corpus's epoch ends on a metrics row, its held-out scoring takes two
or three seconds, and runs are resumed from a shared checkpoint 5 steps before an epoch's
end (tests/terminal.py).
"""

from __future__ import annotations

import json
import shlex
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.terminal import (
    HANGUP,
    PER_EPOCH,
    PHASE_SETTINGS,
    Terminal,
    assert_nothing_left_behind,
    assert_saved_and_released,
    charlm,
    copy_run,
    last_step,
    lock_released,
    make_phase_base,
    metrics,
    wait_for,
    with_sample_length,
)

pytestmark = pytest.mark.slow

REACH = 120  # seconds to reach a phase: TensorFlow's import, on a busy machine


@pytest.fixture(scope="module")
def phase_base(tmp_path_factory):
    return make_phase_base(tmp_path_factory.mktemp("phase-base"))


def _state_step(run: Path) -> int | None:
    try:
        return json.loads((run / "state.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return None


def _starts(run: Path) -> int:
    return sum(1 for row in metrics(run) if row.get("kind") == "start")


@dataclass
class Phase:
    """How to reach a phase of a run: its options, whether it resumes the shared run,
    what to wait for (returning the step reached, None before training), and what
    proves afterwards that the stop came in that phase."""

    name: str
    reach: object
    resumed: bool = True
    options: list = field(default_factory=list)
    sample_length: int = 0  # of the resumed run: 20,000 characters take a second or two
    proof: object = None


def _reach_start_up(term: Terminal, run: Path, app: bool):
    if app:
        term.wait_for_screen("corpus", REACH, "the app's first paint")
    else:
        term.wait_for_output("Corpus length", REACH)  # printed before TensorFlow is imported
    return None


def _reach_tracing(term, run, app):
    term.wait(lambda: _starts(run) == 2, REACH, "the resumed session's start row")
    return PER_EPOCH - 5  # (its first step is being traced)


def _reach_mid_epoch(term, run, app):
    return term.wait(lambda: (last_step(run) or 0) >= 50 and last_step(run), REACH, "50 steps")


def _reach_scoring(term, run, app):
    term.wait(lambda: last_step(run) == PER_EPOCH, REACH, "the epoch's last batch")
    return PER_EPOCH


def _stopped_while_scoring(run: Path) -> None:
    # The epoch is logged (the history shows it) but has no held-out loss: never scored.
    epochs = [row for row in metrics(run) if row["kind"] == "epoch" and row["step"] == PER_EPOCH]
    assert epochs and all(row["val_loss"] is None for row in epochs), \
        ("the epoch was scored: the stop came after the held-out scoring", epochs)


def _reach_epoch_end(term, run, app):
    term.wait(lambda: last_step(run, "epoch") == PER_EPOCH, REACH, "the epoch's end row")
    return PER_EPOCH


def _reach_sample_round(term, run, app):
    term.wait(lambda: _state_step(run) == PER_EPOCH, REACH, "the epoch-end checkpoint")
    return PER_EPOCH


def _stopped_while_sampling(run: Path) -> None:
    assert not (run / "samples" / "epoch-0001.txt").exists(), "the sample round ended before the stop"


def _reach_checkpoint(term, run, app):
    return term.wait(lambda: (_state_step(run) or 0) >= 3 and _state_step(run), REACH, "checkpoints")


def _reach_quit(term, run, app):
    term.wait(lambda: _starts(run) == 2, REACH, "training")
    term.wait_for_screen("training", REACH)
    if term.process.stdin is not None:  # input through a pipe
        term.process.stdin.write(b"q")
        term.process.stdin.flush()
    else:
        term.send("q")
    return PER_EPOCH - 5


PHASES = {phase.name: phase for phase in [
    Phase("start-up", _reach_start_up, resumed=False),
    Phase("tracing", _reach_tracing),
    Phase("mid-epoch", _reach_mid_epoch, resumed=False),
    Phase("scoring", _reach_scoring, proof=_stopped_while_scoring),
    Phase("sample round", _reach_sample_round, sample_length=20_000, proof=_stopped_while_sampling),
    Phase("checkpoint", _reach_checkpoint, resumed=False, options=["--checkpoint-every", "0"]),
    Phase("epoch end", _reach_epoch_end),
    Phase("quit", _reach_quit),
]}

MATRIX = (
    [("train", "hangup", name) for name in PHASES if name != "quit"]
    + [("app", "hangup", name) for name in PHASES]
    + [("train", "no signal", name) for name in ("tracing", "mid-epoch")]
    + [("app", "no signal", name) for name in ("start-up", "mid-epoch", "quit")]
    + [("app", "end of input", name) for name in ("start-up", "mid-epoch", "quit")]
)


@pytest.mark.parametrize("front_end, way, phase", MATRIX,
                         ids=["-".join(case).replace(" ", "_") for case in MATRIX])
def test_a_terminal_that_goes_away_ends_the_run_cleanly(front_end, way, phase, phase_base, tmp_path):
    corpus, base = phase_base
    phase = PHASES[phase]
    run = copy_run(base, tmp_path / "run") if phase.resumed else tmp_path / "run"
    if phase.sample_length:
        with_sample_length(run, phase.sample_length)
    command = [] if front_end == "app" else ["train"]
    term = Terminal(charlm(*command, "--corpus", corpus, "--run", run, *PHASE_SETTINGS, *phase.options),
                    workspace=tmp_path, told_of_hangup=way != "no signal",
                    stdin="pipe" if way == "end of input" else "terminal")
    with term:
        reached = phase.reach(term, run, front_end == "app")
        if way == "end of input":
            term.close_input()
        else:
            term.hang_up()
        code = term.wait_gone()
        output = term.text()
        print(f"gone {term.gone_after:.2f} s after the terminal")
    assert code == HANGUP or (phase.name == "quit" and code == 0), (code, output[-3000:])
    assert_nothing_left_behind(tmp_path, output)
    if reached is None:  # before training began: nothing to save, nothing held
        assert lock_released(run) if run.exists() else True
        assert _starts(run) == 0, "training began: the stop came too late for this phase"
        return
    assert_saved_and_released(run, reached)
    if phase.proof:
        phase.proof(run)


def test_sigterm_during_a_step_too_long_to_wait_for_says_so_and_leaves(phase_base, tmp_path):
    """A batch that takes minutes (4096 windows of 64 characters through 384 units): a
    stop cannot wait for it. SIGTERM is answered within GONE_WITHIN seconds anyway: the
    process says so, writes the end row, releases the run and exits 143 (it used to
    answer only once the step had ended, minutes later)."""
    corpus, _ = phase_base
    run = tmp_path / "run"
    huge = ["--units", "384", "--maxlen", "64", "--step", "8", "--batch-size", "4096",
            "--val-fraction", "0.45", "--length", "0"]
    with Terminal(charlm("train", "--corpus", corpus, "--run", run, *huge), workspace=tmp_path) as term:
        term.wait(lambda: _starts(run) == 1, REACH, "the first step to begin")
        term.signal(signal.SIGTERM)
        code = term.wait_gone()
        output = term.text()
    assert code == 143, output[-3000:]
    assert "did not end within" in output and "no checkpoint was saved yet" in output, output[-3000:]
    assert metrics(run)[-1]["kind"] == "end" and lock_released(run)
    assert_nothing_left_behind(tmp_path, output)


def test_under_nohup_train_outlives_its_terminal(phase_base, tmp_path):
    """`nohup charlm-tui train ... > log &`: started with SIGHUP ignored, no input (nohup
    reads it from /dev/null) and its output in a file, it trains on after the terminal
    goes away (a handler of its own used to stop it at the hangup) and ends as asked."""
    corpus, _ = phase_base
    run, log = tmp_path / "run", tmp_path / "train.log"
    train = shlex.join(charlm("train", "--corpus", corpus, "--run", run, *PHASE_SETTINGS, "--length", "0",
                              "--steps", "300"))
    with Terminal(["sh", "-c", f"exec {train} > {shlex.quote(str(log))} 2>&1"], workspace=tmp_path,
                  ignores_hangup=True, stdin="devnull") as term:
        term.wait(lambda: (last_step(run) or 0) >= 50, REACH, "training")
        term.hang_up()
        wait_for(lambda: term.process.poll() is not None, REACH, "the end of the run", term.describe)
        assert term.process.returncode == 0, log.read_text()[-3000:]
    assert_saved_and_released(run, 300, reason="steps")


def test_a_terminal_that_stops_reading_cannot_hold_the_app_after_sigterm(phase_base, tmp_path):
    """A terminal that takes no more output (a stalled SSH connection, a paused terminal):
    Textual's writer blocks, then its event loop behind the bounded queue. SIGTERM still
    saves the step reached, and the watchdog leaves without Textual, saying so in the
    log (the app used to be deaf to SIGTERM then, for good)."""
    corpus, base = phase_base
    run = copy_run(base, tmp_path / "run")
    with Terminal(charlm("--corpus", corpus, "--run", run, *PHASE_SETTINGS), workspace=tmp_path) as term:
        term.wait_for_screen("training", REACH)
        term.freeze()
        wait_for(lambda: _full(term), 60, "the terminal's buffer to fill")
        reached = last_step(run) or PER_EPOCH - 5
        term.signal(signal.SIGTERM)
        code = term.wait_gone()
    assert code == 143
    assert_saved_and_released(run, reached)
    logs = "".join(log.read_text() for log in (tmp_path / "tmp").glob("charlm-tui-*.log"))
    assert "did not shut down" in logs, logs
    assert_nothing_left_behind(tmp_path, "")


def _full(term: Terminal) -> bool:
    """Whether the terminal's buffer has stopped filling: the app's writes block."""
    before = term.unread()
    time.sleep(0.5)
    return before > 0 and term.unread() == before
