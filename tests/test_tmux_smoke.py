"""A real terminal: the installed `charlm-tui` command inside tmux, driven by keys.

Checks what only a real terminal shows: the app paints and streams text, TensorFlow's
C++ log lines never reach the screen, keys work, `q` saves a checkpoint, the process
exits 0 and the terminal is given back.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import tiny_text
from tests.terminal import (
    TINY,
    Tmux,
    assert_saved_and_released,
    charlm,
    charlm_processes,
    last_step,
    shell_command,
    wait_for,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)"),
]

ROOT = Path(__file__).resolve().parents[1]


def _command() -> list[str]:
    return charlm()


@pytest.fixture
def workspace(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(tiny_text(6000), encoding="utf-8")
    return tmp_path, corpus


def test_app_in_tmux_trains_streams_and_quits_cleanly(workspace):
    tmp_path, corpus = workspace
    run_dir = tmp_path / "run"
    exit_file = tmp_path / "exit-code"
    args = _command() + ["--corpus", str(corpus), "--run", str(run_dir), "--units", "8",
                         "--maxlen", "16", "--step", "8", "--batch-size", "16", "--epochs", "1000"]
    env = f"cd {shlex.quote(str(ROOT))} && TERM=xterm-256color"
    command = f"{env} {shlex.join(args)}; echo $? > {shlex.quote(str(exit_file))}; sleep 30"
    tmux = Tmux(80, 24, command, ROOT, socket=tmp_path / "tmux.sock")
    try:
        first = tmux.wait_for(lambda s: "corpus" in s and "Quit" in s, 30, "the first paint")
        assert "epoch" in first
        # Columns fill: a round streams generated text under the temperature titles.
        screen = tmux.wait_for(lambda s: "round" in s and "T 0.2" in s and "training" in s, 90,
                               "training and a generation round")
        tmux.keys("s")
        tmux.wait_for(lambda s: "resampled" in s, 30, "the resampled round")
        tmux.keys("p")
        tmux.wait_for(lambda s: "paused" in s, 10, "the paused state")
        tmux.keys("p", "k", "?")
        tmux.wait_for(lambda s: "Keys" in s, 10, "the help screen")
        tmux.keys("Escape")
        screen = tmux.wait_for(lambda s: "Keys" not in s, 10, "the help screen to close")
        for line in screen.splitlines():  # TensorFlow's C++ logging never reaches the screen
            assert not line.startswith(("I0000", "W0000", "E0000", "WARNING:")), screen
            assert "cuda" not in line.lower() and "oneDNN" not in line, screen
        tmux.keys("q")
        assert tmux.exit_code(exit_file, "the app") == "0"
        assert (run_dir / "model.keras").is_file()
        # The terminal is given back: the alternate screen is gone, the shell's output shows.
        after = tmux.screen()
        assert "s Sample" not in after, after
    finally:
        tmux.kill()


def test_watch_in_tmux_follows_a_run_and_leaves_no_log_behind(workspace):
    tmp_path, corpus = workspace
    run_dir, scratch, exit_file = tmp_path / "run", tmp_path / "tmp", tmp_path / "exit-code"
    scratch.mkdir()
    train = ["train", "--corpus", str(corpus), "--run", str(run_dir), "--units", "8", "--maxlen", "16",
             "--step", "8", "--batch-size", "16", "--epochs", "1", "--length", "0"]
    trained = subprocess.run(_command() + train, capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert trained.returncode == 0, trained.stderr
    env = f"cd {shlex.quote(str(ROOT))} && TERM=xterm-256color TMPDIR={shlex.quote(str(scratch))}"
    command = (f"{env} {shlex.join(_command() + ['watch', str(run_dir)])}; "
               f"echo $? > {shlex.quote(str(exit_file))}; sleep 30")
    tmux = Tmux(100, 30, command, ROOT, socket=tmp_path / "tmux.sock")
    try:
        tmux.wait_for(lambda s: "the run ended: all epochs done" in s and "round" in s, 90,
                      "the finished run and a round")
        assert any(scratch.glob("charlm-tui-*.log"))  # TensorFlow's fd 2 goes there meanwhile
        tmux.keys("q")
        assert tmux.exit_code(exit_file, "the watcher") == "0"
        assert not any(scratch.glob("charlm-tui-*.log"))  # removed after a clean exit
        assert not any(scratch.iterdir()), list(scratch.iterdir())  # nor any TensorFlow temporaries
    finally:
        tmux.kill()


def _pid_of(marker: str) -> int:
    """The pid of the charlm-tui process whose command line holds `marker`."""
    return wait_for(lambda: (charlm_processes(marker) or [None])[0], 30, f"a process for {marker}")


def _wait_for_steps(run_dir: Path, steps: int) -> int:
    return wait_for(lambda: (last_step(run_dir) or 0) >= steps and last_step(run_dir), 90, "the app to train")


def _app_command(corpus: Path, run_dir: Path, exit_file: Path) -> str:
    args = _command() + ["--corpus", str(corpus), "--run", str(run_dir), *TINY, "--epochs", "1000",
                         "--checkpoint-every", "3600"]
    return shell_command(args, exit_file)


def _assert_checkpoint_is_the_last_step(run_dir: Path, seen: int) -> None:
    """The run ended with a checkpoint of the very step training reached: nothing lost."""
    assert_saved_and_released(run_dir, seen)


@pytest.mark.parametrize("signame, code", [("HUP", 129), ("TERM", 143)])
def test_a_signal_stops_the_app_with_a_checkpoint_and_gives_the_terminal_back(workspace, signame, code):
    """kill -HUP is what a dropped SSH session sends: the app saves the step it reached,
    leaves the alternate screen, turns mouse reporting off and exits 128 + the signal."""
    tmp_path, corpus = workspace
    run_dir, exit_file = tmp_path / "run", tmp_path / "exit-code"
    tmux = Tmux(80, 24, _app_command(corpus, run_dir, exit_file), ROOT, socket=tmp_path / "tmux.sock")
    try:
        tmux.wait_for(lambda s: "training" in s, 90, "training")
        assert tmux.terminal_modes() == "1 1", "the app should hold the alternate screen and the mouse"
        seen = _wait_for_steps(run_dir, 30)
        os.kill(_pid_of(str(run_dir)), getattr(signal, f"SIG{signame}"))
        assert tmux.exit_code(exit_file, "the app") == str(code)
        _assert_checkpoint_is_the_last_step(run_dir, seen)
        assert tmux.terminal_modes() == "0 0", "the terminal was not given back"
        assert "s Sample" not in tmux.screen()
    finally:
        tmux.kill()


def test_closing_the_terminal_stops_the_app_with_a_checkpoint(workspace):
    tmp_path, corpus = workspace
    run_dir, exit_file = tmp_path / "run", tmp_path / "exit-code"
    tmux = Tmux(80, 24, _app_command(corpus, run_dir, exit_file), ROOT, socket=tmp_path / "tmux.sock")
    try:
        tmux.wait_for(lambda s: "training" in s, 90, "training")
        seen = _wait_for_steps(run_dir, 30)
        pid = _pid_of(str(run_dir))
        tmux.kill_session()
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{pid}").exists(), "the app is still running with no terminal"
        _assert_checkpoint_is_the_last_step(run_dir, seen)
    finally:
        tmux.kill()
