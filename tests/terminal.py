"""Real terminals for the tests: `charlm-tui` in a pseudo-terminal of its own, what it
draws, and the three ways a terminal goes away.

    with Terminal(charlm("train", ...), workspace=ws) as term:
        term.wait_for_output("Training on")
        term.hang_up()                    # the window closes: SIGHUP, then EIO on every write
        assert term.wait_gone() == 129    # gone within GONE_WITHIN seconds, nothing left running

`Terminal` runs the command as the leader of a new session whose controlling terminal is
a fresh pty (as sshd, tmux and terminal emulators do), reads everything it writes, and
renders the screen with pyte. Ways to lose the terminal:

* `hang_up()`: the pty's master side closes (a closed window, a dropped SSH session):
  the kernel sends SIGHUP to the session leader, every later write fails with EIO and
  every read returns end-of-file.
* `told_of_hangup=False` and then `hang_up()`: the same without the signal (it is
  blocked in the process, as for a process the dying shell never told): only the
  failing writes and the end of input say that the terminal is gone.
* `stdin="pipe"` and then `close_input()`: input reaches end-of-file while the screen
  is still there.
* `freeze()`: the terminal stays but reads no more (a stalled SSH connection): once its
  buffer is full, every write blocks.

`Tmux` is a tmux server of the test's own (its socket in the test's folder), for what
only a full terminal emulator shows: the alternate screen, mouse reporting.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GONE_WITHIN = 10.0  # seconds from a lost terminal to a process that has saved and left
# A model that trains in milliseconds per step.
TINY = ["--units", "8", "--maxlen", "16", "--step", "8", "--batch-size", "16"]
# Exit codes of a stop by a signal, or by a terminal that went away without one.
HANGUP, INTERRUPTED, TERMINATED, BROKEN_PIPE = 129, 130, 143, 141

# Makes its standard error (always the pty here) the controlling terminal of the new
# session, blocks or ignores SIGHUP if asked (both survive exec), then becomes the command.
_LAUNCHER = """
import fcntl, os, signal, sys, termios
fcntl.ioctl(2, termios.TIOCSCTTY, 0)
if sys.argv[1] == "block":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
elif sys.argv[1] == "ignore":  # as nohup starts a command
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
os.execvp(sys.argv[2], sys.argv[2:])
"""


def charlm(*args) -> list[str]:
    """The installed `charlm-tui` command with `args`."""
    script = Path(sys.executable).parent / "charlm-tui"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "tui.cli"]
    return command + [str(arg) for arg in args]


def wait_for(predicate, timeout: float, what: str, describe=lambda: ""):
    """Poll `predicate` until it returns something true (returned), or fail after
    `timeout` seconds saying what was awaited and, from `describe()`, what was seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            seen = describe()
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                                 + (f"; seen:\n{seen}" if seen else ""))
        time.sleep(0.05)


_ESCAPES = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]"             # CSI: cursor, colour, modes
                      rb"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC: titles, links
                      rb"|\x1b[()][0-9A-Za-z]|\x1b[=>78]")


def plain(data: bytes) -> str:
    """Terminal output without its escape sequences, carriage returns as line ends."""
    text = _ESCAPES.sub(b"", data).decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def workspace_env(workspace: Path, **more: str) -> dict[str, str]:
    """The environment of a command under test: its own temporary folder (logs and
    TensorFlow's scratch files land there, to be checked) and cache folder."""
    scratch = workspace / "tmp"
    scratch.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYTEST_", "COLUMNS", "LINES"))}
    env.update(TERM="xterm-256color", TMPDIR=str(scratch), XDG_CACHE_HOME=str(workspace / "cache"),
               TF_CPP_MIN_LOG_LEVEL="3", KERAS_HOME=str(workspace / "keras-home"), **more)
    return env


class Terminal:
    """A command in a pseudo-terminal of its own; see the module's docstring."""

    def __init__(self, argv: list[str], *, workspace: Path, cwd: Path | None = None, size=(30, 100),
                 stdin: str = "terminal", told_of_hangup: bool = True, ignores_hangup: bool = False,
                 env: dict | None = None):
        import pyte

        rows, columns = size
        self.workspace = workspace
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        standard_input = {"terminal": slave, "pipe": subprocess.PIPE, "devnull": subprocess.DEVNULL}[stdin]
        hangup = "ignore" if ignores_hangup else "deliver" if told_of_hangup else "block"
        launcher = [sys.executable, "-c", _LAUNCHER, hangup]
        self.process = subprocess.Popen(launcher + argv, stdin=standard_input, stdout=slave, stderr=slave,
                                        cwd=cwd or workspace, env=env or workspace_env(workspace),
                                        start_new_session=True)
        os.close(slave)
        self.pid = self.process.pid
        self.screen = pyte.Screen(columns, rows)
        self._stream = pyte.ByteStream(self.screen)
        self._output = bytearray()
        self._lock = threading.Lock()
        self._reading = threading.Event()
        self._reading.set()
        self._reader = threading.Thread(target=self._read, name=f"pty-{self.pid}", daemon=True)
        self._reader.start()
        self.dropped_at: float | None = None

    def _read(self) -> None:
        while self._reading.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: every process has closed its side
                return
            if not data:
                return
            with self._lock:
                self._output += data
                self._stream.feed(data)

    # -- what it shows ------------------------------------------------------------------
    @property
    def output(self) -> bytes:
        with self._lock:
            return bytes(self._output)

    def text(self) -> str:
        """Everything written so far, without escape sequences."""
        return plain(self.output)

    def screen_text(self) -> str:
        with self._lock:
            return "\n".join(line.rstrip() for line in self.screen.display)

    def describe(self) -> str:
        state = "running" if self.process.poll() is None else f"exited {self.process.returncode}"
        return f"[{state}] screen:\n{self.screen_text()}\n--- output (tail):\n{self.text()[-3000:]}"

    def wait(self, predicate, timeout: float, what: str):
        """wait_for while the command runs: its end before `predicate` holds fails at once."""
        def check():
            value = predicate()
            if not value and self.process.poll() is not None:
                raise AssertionError(f"the command ended before {what}; {self.describe()}")
            return value

        return wait_for(check, timeout, what, self.describe)

    def wait_for_output(self, text: str, timeout: float = 90) -> None:
        self.wait(lambda: text in self.text(), timeout, repr(text))

    def wait_for_screen(self, predicate, timeout: float = 90, what: str = "the screen") -> str:
        """Wait until predicate(screen text) holds (a string: until it appears)."""
        check = (lambda screen: predicate in screen) if isinstance(predicate, str) else predicate
        return self.wait(lambda: (lambda s: check(s) and s)(self.screen_text()), timeout, what)

    # -- what a user does -----------------------------------------------------------------
    def send(self, data: str | bytes) -> None:
        os.write(self.master, data.encode() if isinstance(data, str) else data)

    def press(self, *keys: str, screen: str | None = None, timeout: float = 30) -> None:
        """Type keys one at a time; with `screen`, wait for it to show after the last."""
        for key in keys:
            self.send(key)
            time.sleep(0.15)  # a lone ESC is told from a sequence's start by a pause
        if screen is not None:
            self.wait_for_screen(screen, timeout, f"{screen!r} after {keys!r}")

    # -- ways the terminal goes away ----------------------------------------------------
    def hang_up(self) -> None:
        """Close the master side: SIGHUP to the session leader (unless blocked), then EIO
        on every write and end-of-file on every read of the terminal."""
        self._reading.clear()
        self._reader.join()
        self.dropped_at = time.monotonic()
        os.close(self.master)
        self.master = None

    def freeze(self) -> None:
        """Stop reading what the command writes, the terminal left open: once the pty's
        buffer is full every write blocks (a stalled SSH connection, a terminal paused)."""
        self._reading.clear()
        self._reader.join()

    def unread(self) -> int:
        """Bytes written to the terminal and not read yet (after freeze)."""
        return struct.unpack("i", fcntl.ioctl(self.master, termios.FIONREAD, b"\0\0\0\0"))[0]

    def close_input(self) -> None:
        """End-of-file on standard input (stdin="pipe"); the screen stays."""
        self.dropped_at = time.monotonic()
        self.process.stdin.close()

    def signal(self, signum: int) -> None:
        self.dropped_at = time.monotonic()
        os.kill(self.pid, signum)

    # -- how it ended ---------------------------------------------------------------------
    def wait_gone(self, within: float = GONE_WITHIN) -> int:
        """The exit code, once the process has exited and nothing of its session is left
        running, at most `within` seconds after the terminal went away."""
        start = self.dropped_at or time.monotonic()
        deadline = start + within
        wait_for(lambda: self.process.poll() is not None, max(0.0, deadline - time.monotonic()),
                 f"the process to leave within {within:.0f} s", self.describe)
        wait_for(lambda: not session_processes(self.pid), max(0.5, deadline - time.monotonic()),
                 "nothing of its session left running", lambda: str(session_processes(self.pid)))
        self.gone_after = time.monotonic() - start
        return self.process.returncode

    def wait_exit(self, timeout: float = 120) -> int:
        wait_for(lambda: self.process.poll() is not None, timeout, "the command to end", self.describe)
        if self.master is not None and self._reading.is_set():  # what it wrote last
            wait_for(lambda: not self._reader.is_alive(), 10, "the end of its output")
        return self.process.returncode

    def close(self) -> None:
        """Whatever happened: nothing of this session left running, the pty closed."""
        if self.process.poll() is None or session_processes(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        if self.master is not None:
            self._reading.clear()
            if self._reader.is_alive():
                self._reader.join()
            os.close(self.master)
            self.master = None
        if self.process.stdin:
            with contextlib.suppress(OSError):
                self.process.stdin.close()

    def __enter__(self) -> "Terminal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def charlm_processes(marker: str) -> list[int]:
    """Live Python processes (charlm-tui, not a shell or tmux) whose command line holds
    `marker` (a run directory, say)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and b"python" in Path(argv[0].decode(errors="replace")).name.encode() and \
                any(marker.encode() in arg for arg in argv):
            found.append(int(entry.name))
    return found


def session_processes(session: int) -> list[int]:
    """Live processes (not zombies) of a session."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == session and fields[0] != "Z":
            found.append(int(entry.name))
    return found


# -- what a run directory says after a stop ----------------------------------------------------

def metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def last_step(run_dir: Path, kind: str = "interval") -> int | None:
    steps = [row["step"] for row in metrics(run_dir) if row.get("kind") == kind]
    return steps[-1] if steps else None


def lock_released(run_dir: Path) -> bool:
    """Nobody holds the run directory, and its lock names no process."""
    lock = run_dir / ".lock"
    if not lock.exists():
        return True
    with open(lock, "rb+") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(file, fcntl.LOCK_UN)
        return file.read().strip() == b""


def assert_saved_and_released(run_dir: Path, reached: int | None = None, reason: str = "stopped") -> dict:
    """The run ended cleanly: an end row, a loadable checkpoint of the step it names
    (at least `reached`), and the run directory released. Returns the end row."""
    from engine.files.vetting import archive_problem

    rows = metrics(run_dir)
    assert rows and rows[-1].get("kind") == "end", f"no end row: {rows[-3:]}"
    end = rows[-1]
    assert end["reason"] == reason, end
    state = json.loads((run_dir / "state.json").read_text())
    assert state["step"] == end["step"], f"the checkpoint is of step {state['step']}, the end row says {end}"
    if reached is not None:
        assert end["step"] >= reached, f"the end row {end} is before step {reached}, reached before the stop"
    assert archive_problem(run_dir / "model.keras") is None
    assert lock_released(run_dir), f"{run_dir / '.lock'} is still held or names a process"
    return end


def assert_nothing_left_behind(workspace: Path, output: str) -> None:
    """No traceback on the terminal or in a log; no scratch folder of TensorFlow's left."""
    assert "Traceback" not in output, output[-4000:]
    scratch = workspace / "tmp"
    for log in scratch.glob("charlm-tui-*.log"):
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, f"{log}:\n{text[-4000:]}"
    left = sorted(path.name for path in scratch.glob("charlm-tf-*"))
    assert not left, f"TensorFlow's scratch folders left behind: {left}"


# -- tmux ----------------------------------------------------------------------------------------

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
        return wait_for(lambda: (lambda s: predicate(s) and s)(self.screen()), timeout, what, self.screen)

    def exit_code(self, exit_file: Path, what: str) -> str:
        """What the command wrote to `exit_file` (its $?) once it has exited."""
        # (The shell creates the file before it writes the code into it.)
        return wait_for(lambda: exit_file.exists() and exit_file.read_text().strip(), 60, f"{what} to exit",
                        self.screen)

    def terminal_modes(self) -> str:
        """"alternate-screen mouse-reporting" flags of the pane, e.g. "0 0" once given back."""
        result = subprocess.run([*self.tmux, "display-message", "-p", "-t", self.name,
                                 "#{alternate_on} #{mouse_any_flag}"], capture_output=True, text=True)
        return result.stdout.strip()

    def kill_session(self) -> None:
        """What closing the terminal does: the processes in it get SIGHUP."""
        subprocess.run([*self.tmux, "kill-session", "-t", self.name], check=True)

    def kill(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True)  # this test's server only


def shell_command(args: list[str], exit_file: Path, env: str = "") -> str:
    """A shell line for tmux: run `args` from the checkout, note its exit code, linger."""
    prefix = f"cd {shlex.quote(str(ROOT))} && TERM=xterm-256color {env}".rstrip()
    return f"{prefix} {shlex.join(args)}; echo $? > {shlex.quote(str(exit_file))}; sleep 30"


def have(program: str) -> bool:
    return shutil.which(program) is not None


# -- a corpus and a run whose phases a test can reach on cue --------------------------------------

PER_EPOCH = 800  # batches per epoch of the phase corpus: a multiple of log_every (50)
# Batches of 8 (milliseconds each), 45% held out (its scoring takes a second or two), no
# mid-epoch checkpoint unless asked. The shared run samples nothing after an epoch unless
# asked (with_sample_length).
PHASE_SETTINGS = ["--units", "8", "--maxlen", "16", "--step", "8", "--batch-size", "8",
                  "--val-fraction", "0.45", "--checkpoint-every", "3600", "--epochs", "3"]


def phase_corpus_text() -> str:
    """Pseudo-English whose training split makes exactly PER_EPOCH batches: the metrics
    row of an epoch's last batch (log_every divides it) says the held-out scoring has
    begun."""
    from engine.data.windows import count_windows, split_point
    from tests.conftest import tiny_text

    text = tiny_text(100_000, seed=5)
    for length in range(len(text), 0, -1):
        if count_windows(split_point(length, 0.45), 16, 8) // 8 == PER_EPOCH:
            return text[:length]
    raise AssertionError("no corpus length gives PER_EPOCH batches")


def make_phase_base(workspace: Path) -> tuple[Path, Path]:
    """(corpus, run): the phase corpus trained to 5 steps before the end of its first
    epoch, checkpointed there: resumed copies reach the epoch's end in a few steps."""
    corpus = workspace / "phases.txt"
    corpus.write_text(phase_corpus_text(), encoding="utf-8")
    run = workspace / "base"
    out = subprocess.run(charlm("train", "--corpus", corpus, "--run", run, *PHASE_SETTINGS, "--length", "0",
                                "--steps", PER_EPOCH - 5),
                         capture_output=True, text=True, env=workspace_env(workspace), cwd=workspace,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    start = next(row for row in metrics(run) if row["kind"] == "start")
    assert start["steps_per_epoch"] == PER_EPOCH, start
    return corpus, run


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, ignore=shutil.ignore_patterns(".lock"))
    return to


def with_sample_length(run: Path, length: int) -> None:
    """Make a saved run one trained with `--length length` (its samples after each epoch)."""
    path = run / "config.json"
    data = json.loads(path.read_text())
    data["config"]["sample_length"] = length
    path.write_text(json.dumps(data))
