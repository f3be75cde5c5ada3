"""A real terminal: the installed `charlm-tui` command inside tmux, driven by keys.

Checks what only a real terminal shows: the app paints and streams text, TensorFlow's
C++ log lines never reach the screen, keys work, `q` saves a checkpoint, the process
exits 0 and the terminal is given back.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import tiny_text

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)"),
]

ROOT = Path(__file__).resolve().parents[1]


def _command() -> list[str]:
    script = Path(sys.executable).parent / "charlm-tui"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "tui.cli"]


class Tmux:
    """A tmux session on a server of its own (its socket in the test's folder), so no
    other tmux session on the machine is touched."""

    def __init__(self, width: int, height: int, command: str, cwd: Path, socket: Path):
        self.name = f"charlm-{uuid.uuid4().hex[:8]}"
        self.tmux = ["tmux", "-S", str(socket)]
        subprocess.run([*self.tmux, "new-session", "-d", "-s", self.name, "-x", str(width),
                        "-y", str(height), "-c", str(cwd), command], check=True)

    def screen(self) -> str:
        result = subprocess.run([*self.tmux, "capture-pane", "-p", "-t", self.name],
                                capture_output=True, text=True)
        return result.stdout

    def keys(self, *keys: str) -> None:
        for key in keys:
            subprocess.run([*self.tmux, "send-keys", "-t", self.name, key], check=True)
            time.sleep(0.3)

    def wait_for(self, predicate, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the screen:\n{screen}")
            time.sleep(0.2)

    def exit_code(self, exit_file: Path, what: str) -> str:
        """What the command wrote to `exit_file` (its $?) once it has exited."""
        deadline = time.monotonic() + 60
        while not exit_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert exit_file.exists(), f"{what} did not exit; the screen:\n{self.screen()}"
        return exit_file.read_text().strip()

    def kill(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True)  # this test's server only


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
    trained = subprocess.run(_command() + ["train", "--corpus", str(corpus), "--run", str(run_dir), "--units", "8",
                                           "--maxlen", "16", "--step", "8", "--batch-size", "16", "--epochs", "1",
                                           "--length", "0"], capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert trained.returncode == 0, trained.stderr
    env = f"cd {shlex.quote(str(ROOT))} && TERM=xterm-256color TMPDIR={shlex.quote(str(scratch))}"
    command = (f"{env} {shlex.join(_command() + ['watch', str(run_dir)])}; "
               f"echo $? > {shlex.quote(str(exit_file))}; sleep 30")
    tmux = Tmux(100, 30, command, ROOT, socket=tmp_path / "tmux.sock")
    try:
        tmux.wait_for(lambda s: "the run finished" in s and "round" in s, 90, "the finished run and a round")
        assert any(scratch.glob("charlm-tui-watch-*.log"))  # TensorFlow's fd 2 goes there meanwhile
        tmux.keys("q")
        assert tmux.exit_code(exit_file, "the watcher") == "0"
        assert not any(scratch.glob("charlm-tui-watch-*.log"))  # removed after a clean exit
    finally:
        tmux.kill()
