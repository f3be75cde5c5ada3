"""The charlm-tui app: train a character-level LSTM and watch it learn.

The App keeps what is app-wide: the keys, the command palette, quitting and signals.
Everything about the run is the main screen's (screens/main.py), which shows one
source of engine events: a RunSession training here, or a run directory opened or
followed. TensorFlow is imported on the engine's threads, after the first paint.

    build_app(options)  the app, as the CLI and the tests make it
    run_app(options)    run it in this terminal; returns the exit code
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from textual import work
from textual.app import App

from engine.errors import CharlmError
from tui import compat, sources, streams
from tui.commands import CharlmCommands
from tui.keys import KEYS
from tui.lifeline import Lifeline
from tui.messages import StopRequested
from tui.options import AppOptions
from tui.screens.confirm import ConfirmScreen
from tui.screens.main import MainScreen
from tui.screens.run_keys import key_bindings
from tui.visible import visible, visible_line

QUIT_TIMEOUT = 120.0   # seconds q waits for the checkpoint before giving up


@dataclass(frozen=True)
class Notice:
    message: str
    title: str
    severity: str


class CharlmApp(App[int]):
    """Training progress on top, generated text streaming below."""

    CSS_PATH = "app.tcss"
    TITLE = "charlm-tui"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (34, "-tall")]
    COMMANDS = App.COMMANDS | {CharlmCommands}
    BINDINGS = key_bindings(k for k in KEYS if k.action == "quit")

    def __init__(self, options: AppOptions, driver_class=None, make_source=None) -> None:
        super().__init__(driver_class=driver_class)
        self.options = options
        self.make_source = make_source or sources.make_source  # (tests give one that replays events)
        self.main: MainScreen | None = None  # made by get_default_screen, as the app starts
        self.signal_received: int | None = None
        self.notices: deque[Notice] = deque(maxlen=100)  # what notify() has shown, newest last
        self.lifeline: Lifeline | None = None  # run_app's: signals and a terminal gone
        self._quitting = False

    def notify(self, message: str, *, title: str = "", severity="information", **options) -> None:
        """Every notification of the app: its text often names a file or quotes a run
        directory, so it is shown as text (tui/visible.py), never as markup."""
        message, title = visible(message, tab=" "), visible_line(title)
        self.notices.append(Notice(message, title, severity))
        super().notify(message, title=title, severity=severity, **{"markup": False, **options})

    def get_default_screen(self) -> MainScreen:
        self.main = MainScreen(self.options, self.make_source)
        return self.main

    # -- what tests and benchmarks look at ----------------------------------------------------
    @property
    def phase(self) -> str:
        return self.main.phase

    @property
    def training_pane(self):
        return self.main.training_pane

    @property
    def generation_pane(self):
        return self.main.generation_pane

    @property
    def header(self):
        return self.main.header

    # -- keys: the run's are the main screen's (tui/screens/run_keys.py) ------------------------
    def get_system_commands(self, screen):
        """Textual's own commands, less its Quit: ours (in palette_commands) saves a
        checkpoint first, and one Quit in the palette is enough."""
        for command in super().get_system_commands(screen):
            if command.title != "Quit":
                yield command

    def palette_commands(self):
        """(title, detail, run it) of every key that applies now, for the command palette:
        the run's actions are the main screen's, quitting is the App's."""
        for key in KEYS:
            if self.main.applies(key.action):
                where = self if key.action == "quit" else self.main
                yield key.title, key.detail, partial(self.run_action, key.action, where)

    # -- quitting -----------------------------------------------------------------------------------
    async def action_quit(self) -> None:
        if self._quitting:
            return
        self._quitting = True
        source = self.main.source
        await self.main.stop(source.leaving, QUIT_TIMEOUT)
        error = source.checkpoint_error
        if error is None:
            self.exit(0)
            return
        # The last checkpoint failed (a full disk...): the weights are only in memory.
        self._quitting = False
        self.main.training_pane.set_status(f"checkpoint not saved: {error}", "error")

        def answer(quit_anyway: bool | None) -> None:
            if quit_anyway:
                self.exit(0)
            else:
                self.retry_checkpoint(source)

        self.push_screen(ConfirmScreen(
            "The checkpoint was not saved",
            f"{error}. Quit anyway and lose the training since the last checkpoint, or free "
            "some space and retry?", yes="Quit anyway", no="Retry"), answer)

    @work(thread=True, exclusive=True, group="checkpoint", exit_on_error=False)
    def retry_checkpoint(self, source) -> None:
        try:
            source.save_checkpoint()
        except CharlmError as error:
            self.call_from_thread(self.notify, str(error), title="Checkpoint failed again",
                                  severity="error", timeout=10)
            self.call_from_thread(self.run_action, "quit")  # asks again
            return
        self.call_from_thread(self.exit, 0)

    def on_stop_requested(self, message: StopRequested) -> None:
        """SIGHUP (a dropped SSH session, or a terminal found gone), SIGTERM, SIGINT: the
        lifeline (tui/lifeline.py) has told the run to stop after this batch and save a
        checkpoint; show it, wait for it, give the terminal back and exit 129/143/130.
        The lifeline makes the process leave if this cannot happen in time."""
        if self.signal_received is not None:
            return
        self.signal_received = message.signum
        self.run_worker(self._leave_after_signal(128 + message.signum), group="signal")

    async def _leave_after_signal(self, code: int) -> None:
        deadline = self.lifeline.deadline if self.lifeline is not None else None
        timeout = max(deadline - time.monotonic(), 0.0) if deadline is not None else QUIT_TIMEOUT
        await self.main.stop("saving a checkpoint (signal)…", timeout)
        self.exit(code)

    def session_now(self):
        """The RunSession training now (None before the screen, and in --no-train/watch)."""
        return self.main.session if self.main is not None else None

    async def on_unmount(self) -> None:
        """Every way out passes here: stop the trainer (it saves a checkpoint) before
        asyncio waits for the worker threads, which would otherwise train on, invisibly."""
        if self.signal_received is None:
            await self.main.stop(timeout=QUIT_TIMEOUT)

    def stop_threads(self, timeout: float = QUIT_TIMEOUT) -> None:
        """From outside the event loop (after it ended): stop the run and wait for it
        (after a signal, until the lifeline's deadline: it leaves then, whatever)."""
        if self.main is not None:
            source = self.main.source
            source.stop()
            deadline = self.lifeline.deadline if self.lifeline is not None else None
            source.wait(timeout if deadline is None else max(deadline - time.monotonic(), 0.0))


# -- entry points -------------------------------------------------------------------------------
def build_app(options: AppOptions, driver_class=None, make_source=None) -> CharlmApp:
    return CharlmApp(options, driver_class, make_source)


def saved_line(app: CharlmApp) -> str | None:
    """What was saved and how to resume it, for the shell after the app has quit; that
    nothing new was, when it quit before training began; None when it trained nothing
    (--no-train, watch) or its run failed (the failure says so)."""
    import shlex

    session = app.main.session if app.main is not None else None
    finished = session.finished if session is not None else None
    if session is not None and finished is None and session.error is None and session.run_dir:
        # Quit while the run was being prepared (after `r` or `c` too): say so, not nothing.
        return visible_line("charlm-tui: stopped before training began; nothing new was saved in "
                            f"{session.run_dir}")
    if finished is None or session.corpus is None or not session.run_dir:
        return None
    corpus = session.corpus
    spec = corpus.source if os.path.exists(corpus.source) else corpus.name
    loss = f", held-out loss {finished.val_loss:.4f}" if finished.val_loss is not None else ""
    return visible_line(f"charlm-tui: saved {session.run_dir} at step {finished.step:,}{loss}; resume with: "
                        f"charlm-tui --corpus {shlex.quote(spec)} --run {shlex.quote(str(session.run_dir))}")


def run_app(options: AppOptions) -> int:
    """Run the app in this terminal: the terminal is restored and the checkpoint saved
    whatever way it ends, a terminal that went away included (tui/lifeline.py, and
    tui/compat.py for Textual's part). TensorFlow's C++ log lines go to a temporary log
    file, not the screen (nothing is written where the user did not ask): removed after
    a clean exit, named after a failure."""
    log_path = Path(tempfile.gettempdir()) / f"charlm-tui-{os.getpid()}.log"
    terminal = compat.TerminalModes(None)
    app: CharlmApp | None = None
    lifeline = Lifeline(session=lambda: app.session_now() if app is not None else None,
                        on_stop=lambda signum: app.post_message(StopRequested(signum)),
                        before_leaving=lambda: terminal.restore())
    app = build_app(options, compat.terminal_driver(on_input_end=lambda: lifeline.request(signal.SIGHUP)))
    app.lifeline = lifeline
    lifeline.install()
    try:
        with compat.stderr_to_log(log_path, on_lost=lifeline.request) as terminal:
            try:
                result = app.run()
            finally:
                app.stop_threads()
    finally:
        lifeline.uninstall()
    code = app.return_code if app.return_code not in (None, 0) else int(result or 0)
    if lifeline.exit_code is not None:
        code = lifeline.exit_code
    line = saved_line(app)
    if line:
        streams.print_safely(line)
    if code == 0 or _empty(log_path):
        log_path.unlink(missing_ok=True)
    elif log_path.exists():
        streams.print_safely(f"charlm-tui: the log is {log_path}", file=sys.stderr)
    lifeline.ended.set()
    return code


def _empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False
