"""One run's life, for every front end: `charlm-tui train` and the app both drive it.

A `RunSession` loads the corpus, settles the run directory and the settings (a
resumed run keeps its own unless told otherwise), trains, pauses, stops on request or
on a signal with a checkpoint saved, writes the per-epoch samples and metrics, and
reports everything as plain events (engine.events). Front ends only show the events
and call `stop()`, `pause()`, `resume()`: they cannot drift apart.

    session = RunSession(RunRequest(corpus="nietzsche"), on_event=print)
    with session.stopping_on_signals():   # main thread: Ctrl-C, SIGTERM, SIGHUP
        finished = session.run()           # or session.start() for a thread of its own
    sys.exit(session.exit_code)
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine import events
from engine.config import TrainConfig, preset
from engine.errors import CharlmError
from engine.files.rundir import RunDir
from engine.run.settings import RunSettings, resolve
from engine.tfsetup import keras

if TYPE_CHECKING:
    from engine.data.corpus import Corpus
    from engine.run.training import Trainer

log = logging.getLogger("charlm.engine")

DEFAULT_RUNS_DIR = Path("runs")
# The signals that stop a run, and how each ends it, as a shell reports it: 128 + the
# signal's number.
SIGNAL_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}
PROGRESS_INTERVAL = 0.2  # seconds between corpus-reading progress events


def default_run_dir(corpus_name: str) -> Path:
    return DEFAULT_RUNS_DIR / corpus_name


@dataclass
class RunRequest:
    """What a front end asks for; the session settles the rest."""

    corpus: "str | Corpus" = "nietzsche"  # a file, a folder of .txt, a named corpus, or a loaded Corpus
    run_dir: Path | str | None = None   # None: runs/<corpus name>
    preset: str | None = None           # None: a resumed run's own, else "fast"
    overrides: dict = field(default_factory=dict)  # settings given explicitly (command line, app)
    fresh: bool = False                 # start over instead of resuming
    encoding: str | None = None
    tensorboard_dir: Path | str | None = None  # "": RUN/tensorboard
    sample_each_epoch: bool = True      # generate and save samples/epoch-NNNN.txt after each epoch

    def _corpus_path(self) -> Path | None:
        """The corpus as a path on disk (a named corpus is none)."""
        corpus = self.corpus if isinstance(self.corpus, str) else getattr(self.corpus, "source", None)
        path = Path(corpus).expanduser() if corpus else None
        return path if path is not None and path.exists() else None

    def check(self) -> None:
        """Refuse, before anything is loaded or written, settings that cannot work
        (ValueError) and a given run directory that training could hurt (RunDirError)."""
        preset(self.preset or "fast", **self.overrides)
        if self.run_dir is not None:
            RunDir(self.run_dir).check_can_train(self._corpus_path())

    def resolve(self, run_dir: Path) -> RunSettings:
        """The settings to train with in `run_dir`, worked out once (engine/run/settings.py):
        a resumed run keeps its saved settings unless this request overrides them (or
        names another preset, or starts fresh)."""
        return resolve(run_dir, preset_name=self.preset, overrides=self.overrides, fresh=self.fresh,
                       corpus_path=self._corpus_path())

    def settings(self, run_dir: Path) -> TrainConfig:
        """The config to train with in `run_dir` (see resolve)."""
        return self.resolve(run_dir).config


class RunSession:
    """Loads, trains and stops one run; every method but `run` may be called from any thread."""

    def __init__(self, request: RunRequest, on_event: Callable[[events.Event], None] | None = None):
        self.request = request
        self.on_event = on_event or (lambda event: None)
        self.corpus: "Corpus | None" = None
        self.run_dir: Path | None = Path(request.run_dir) if request.run_dir else None
        self.config: TrainConfig | None = None
        self.settings: RunSettings | None = None  # worked out once, shared with the trainer
        self.trainer: "Trainer | None" = None
        self.finished: events.TrainingFinished | None = None
        self.error: str | None = None           # why it failed, one sentence
        self.signal_received: int | None = None
        self._stop = threading.Event()
        self._paused = False
        self._lock = threading.Lock()           # trainer hand-over between threads
        self._thread: threading.Thread | None = None
        self._last_progress = 0.0
        self._committed = False                 # the trainer is being made: a stop must wait for it
        self.done = threading.Event()           # set however the run ends

    # -- running ---------------------------------------------------------------------------
    def run(self) -> events.TrainingFinished | None:
        """Load, train and finish on this thread. Returns None when stopped before training
        began; a refusal is reported as a TrainingFailed event and raised (CharlmError)."""
        try:
            return self._run()
        except CharlmError as error:
            self.error = str(error)
            self._emit(events.TrainingFailed(self.error))
            raise
        finally:
            self.done.set()

    def start(self) -> threading.Thread:
        """Run on a thread of its own; failures become TrainingFailed events (a bug is
        logged with its traceback, and reported in one line)."""
        def target() -> None:
            try:
                self.run()
            except CharlmError:
                pass  # reported by run()
            except Exception as error:  # a bug: keep the front end alive and say what happened
                log.error("the training thread failed:\n%s", traceback.format_exc())
                self.error = f"{type(error).__name__}: {error}"
                self._emit(events.TrainingFailed(self.error))

        self._thread = threading.Thread(target=target, name="charlm-training", daemon=True)
        self._thread.start()
        return self._thread

    def prepare(self) -> TrainConfig:
        """Load the corpus and settle the run directory and the settings (no TensorFlow,
        nothing written): what a dry run shows. `run` calls it first if needed."""
        if self.config is None:
            corpus = self._load_corpus(self._lowercase_guess())
            if self.run_dir is None:
                self.run_dir = default_run_dir(corpus.name)
            self.config = self._settings().config
            if self.config.lowercase != corpus.lowercase:  # a resumed run's own case setting
                corpus = self._load_corpus(self.config.lowercase)
            self._tell_settings_from_run()
            self._emit(events.CorpusReady(corpus.name, corpus.source, len(corpus), len(corpus.vocab),
                                          str(self.run_dir)))
        return self.config

    def _run(self) -> events.TrainingFinished | None:
        request = self.request
        self.prepare()
        corpus = self.corpus
        if self._stop.is_set():
            return None
        self._emit(events.Preparing("loading TensorFlow…"))
        keras()
        from engine.run.training import Trainer  # (numpy and the training stack: not for --help)

        with self._lock:
            if self._stop.is_set():
                return None
            self._committed = True  # from here on a stop waits for the trainer and its checkpoint
        self._emit(events.Preparing("building the model…"))
        tensorboard = request.tensorboard_dir
        if tensorboard == "":
            tensorboard = self.run_dir / "tensorboard"
        trainer = Trainer(corpus, self.config, self.run_dir, on_event=self._emit, fresh=request.fresh,
                          sample_each_epoch=request.sample_each_epoch, tensorboard_dir=tensorboard,
                          settings=self.settings)
        with self._lock:
            self.trainer = trainer
            if self._paused:
                trainer.pause()
        if self._stop.is_set():
            trainer.close()
            return None
        self.finished = trainer.run()
        return self.finished

    def _settings(self) -> RunSettings:
        if self.settings is None or self.settings.run_dir != Path(self.run_dir):
            self.settings = self.request.resolve(self.run_dir)
        return self.settings

    def _lowercase_guess(self) -> bool:
        """Whether the corpus will be lower-cased, as far as it can be told before it is
        loaded: the run's own setting when the run directory is known, else the request's."""
        request = self.request
        if self.run_dir is not None:
            return self._settings().config.lowercase
        return request.overrides.get("lowercase", preset(request.preset or "fast").lowercase)

    def _tell_settings_from_run(self) -> None:
        kept = self._settings().kept_from_run()
        if kept:
            shown = ", ".join(f"{name}={value}" for name, value in kept.items())
            self._emit(events.Notice(f"resuming {self.run_dir} with its own settings: {shown} "
                                     "(an option given on the command line overrides one)"))

    def _load_corpus(self, lowercase: bool) -> "Corpus":
        corpus = self.request.corpus
        if not isinstance(corpus, str):  # already loaded (the app's corpus picker, a retrain)
            if corpus.lowercase == lowercase:
                self.corpus = corpus
                return corpus
            # Read it again with the case setting the run needs, from where it came from.
            corpus = corpus.source if Path(corpus.source).exists() else corpus.name
        from engine.data.corpus import load_corpus  # (numpy: not for --help)

        self._emit(events.Preparing("loading the corpus…"))
        self.corpus = load_corpus(
            corpus, lowercase=lowercase,
            encoding=self.request.encoding, on_notice=lambda message: self._emit(events.Notice(message)),
            on_progress=self._reading_progress)
        return self.corpus

    def _reading_progress(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_INTERVAL or done >= total:
            self._last_progress = now
            fraction = done / max(total, 1)
            self._emit(events.Preparing(f"loading the corpus… {fraction:.0%}", fraction, total))

    def _emit(self, event) -> None:
        self.on_event(event)

    # -- control from any thread -----------------------------------------------------------
    def stop(self) -> None:
        """Stop after the current batch, with a checkpoint saved. Before training (the
        corpus or TensorFlow still loading) the run is over at once: it has nothing to
        save and holds nothing, and `run` returns None when the loading ends."""
        with self._lock:
            first = not self._stop.is_set()
            ended = self.done.is_set()
            self._stop.set()
            trainer = self.trainer
            if not self._committed:
                self.done.set()
        if trainer is not None:
            trainer.stop()
        if first and not ended:
            self._emit(events.StateChanged("stopping"))

    def pause(self) -> None:
        self._set_paused(True)

    def resume(self) -> None:
        self._set_paused(False)

    def _set_paused(self, paused: bool) -> None:
        with self._lock:
            if paused == self._paused or self._stop.is_set():
                return
            self._paused = paused
            trainer = self.trainer
        if trainer is not None:
            trainer.pause() if paused else trainer.resume()
        self._emit(events.StateChanged("paused" if paused else "running"))

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run to end; whether it has."""
        return self.done.wait(timeout)

    # -- what front ends ask ---------------------------------------------------------------
    def sampler(self):
        """A sampler with a copy of the current weights, or None before the model exists."""
        with self._lock:
            trainer = self.trainer
        if trainer is None:
            return None
        try:
            return trainer.sampler()
        except CharlmError:
            return None

    @property
    def checkpoint_error(self):
        """The last checkpoint's failure (a full disk...), None when it was saved."""
        return self.trainer.checkpoint_error if self.trainer is not None else None

    def save_checkpoint(self) -> None:
        """Retry a failed checkpoint now; raises RunDirError if it fails again."""
        if self.trainer is not None:
            self.trainer.save_checkpoint()

    @property
    def exit_code(self) -> int:
        """What the process should exit with: 128 + the signal's number (129 SIGHUP, 130
        SIGINT, 141 SIGPIPE, 143 SIGTERM), 1 for a failure or a lost checkpoint, else 0."""
        if self.error is not None or self.checkpoint_error is not None:
            return 1
        return 128 + int(self.signal_received) if self.signal_received is not None else 0

    def abandon(self) -> int | None:
        """The process must leave before the run could stop (a step that does not end):
        write the run's end row with the step of its last checkpoint (whole on disk: every
        file is replaced atomically) and release the run directory, so that `watch` and
        the next `train` see a stopped run. Returns that step (None: no checkpoint yet)."""
        with self._lock:
            trainer = self.trainer
        return trainer.abandon() if trainer is not None else None

    # -- signals -----------------------------------------------------------------------------
    def on_signal(self, signum: int) -> None:
        """Ctrl-C, SIGTERM, SIGHUP (a dropped SSH session): stop after this batch and save."""
        if self.signal_received is None:
            self.signal_received = signum
        self.stop()

    @contextlib.contextmanager
    def stopping_on_signals(self, on_signal: Callable[[int], None] | None = None):
        """On the main thread: the stopping signals stop the run (then `on_signal(signum)`)
        instead of killing the process; the previous handlers come back afterwards. A
        SIGHUP the process was started ignoring (nohup) stays ignored."""
        def handler(signum, frame) -> None:
            self.on_signal(signum)
            if on_signal is not None:
                on_signal(signum)

        previous = {sig: signal.signal(sig, handler) for sig in SIGNAL_EXIT_CODES
                    if not (sig == signal.SIGHUP and signal.getsignal(sig) is signal.SIG_IGN)}
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
