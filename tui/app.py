"""The charlm-tui app: train a character-level LSTM and watch it learn.

The engine runs on a worker thread (`@work(thread=True)`); its events come back as
messages (messages.py), so the event loop never waits for TensorFlow. TensorFlow is
imported on that thread too, after the first paint: nothing this module imports at
the top pulls it in.

    build_app(options)  the app, as the CLI and the snapshot tests make it
    run_app(options)    run it in this terminal; returns the exit code
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer

from engine import events
from engine.config import TrainConfig
from engine.errors import CharlmError
from tui.commands import CharlmCommands
from tui.messages import (CorpusReady, EngineEvent, EngineFailed, LoadingStatus, RunOpened,
                          SamplerReady, WorkerDone)
from tui.screens.confirm import ConfirmScreen
from tui.screens.corpus_picker import CorpusPicker, builtin_is_local, remember_corpus
from tui.screens.help import HelpScreen
from tui.screens.prompt import PromptScreen
from tui.widgets.generation import GenerationPane
from tui.widgets.header import HeaderInfo, RunHeader, display_path
from tui.widgets.training import TrainingPane

log = logging.getLogger("charlm.tui")

SEED_CHARS = 60          # length of a random seed text (the book's window); the sampler reads any length
MAX_TEMPERATURES = 6
STOP_TIMEOUT = 120.0     # seconds to wait for a checkpoint on quit before giving up
DEFAULT_RUNS_DIR = "runs"


@dataclass
class AppOptions:
    corpus: str = "nietzsche"   # a file, a folder of .txt, or a named corpus
    run_dir: str | None = None  # None: runs/<corpus name> under the working directory
    config: TrainConfig = field(default_factory=TrainConfig)
    no_train: bool = False      # sampling only: open run_dir and generate
    fresh: bool = False         # start over instead of resuming
    encoding: str | None = None
    seed: int | None = None     # seed texts and sampling (fixed: deterministic output)


@dataclass(frozen=True)
class KeyAction:
    key: str
    action: str
    label: str         # the Footer's word
    title: str         # the command palette's name
    detail: str        # one line for the help screen and the palette
    key_display: str | None = None


KEYS = (
    KeyAction("s", "resample", "Sample", "Resample now",
              "a new round from a new random seed text of the corpus (unpins the seed)"),
    KeyAction("e", "edit_seed", "Seed", "Edit the seed text",
              "type the text every round starts from (pinned until s)"),
    KeyAction("t", "edit_temperatures", "Temps", "Edit the temperatures",
              "1 to 6 comma-separated values in [0, 10], one column each"),
    KeyAction("k", "toggle_colour", "Colour", "Colour by probability",
              "colour each generated character by the probability the model gave it"),
    KeyAction("p", "toggle_pause", "Pause", "Pause or resume training",
              "pauses between batches; sampling keeps working"),
    KeyAction("r", "retrain", "Retrain", "Retrain from scratch",
              "checkpoint the current run, then start it over from step 0 (asks first)"),
    KeyAction("c", "swap_corpus", "Corpus", "Swap the corpus",
              "pick another corpus; training goes on in runs/<name>"),
    KeyAction("x", "export", "Save", "Export the samples",
              "write the current samples to a text file in the run directory"),
    KeyAction("question_mark", "help", "Help", "Help", "keys and what the panes show",
              key_display="?"),
    KeyAction("q", "quit", "Quit", "Quit", "save a checkpoint and leave"),
)
TRAINING_ONLY = {"toggle_pause", "retrain", "swap_corpus"}
NEEDS_SAMPLER = {"resample", "edit_seed", "export"}


@dataclass
class Run:
    """One training run (or one opened run directory) and the thread driving it."""

    generation: int
    corpus_spec: str
    run_dir: Path | None
    config: TrainConfig
    fresh: bool = False
    corpus: Any = None                      # engine.corpus.Corpus once loaded
    trainer: Any = None                     # engine.training.Trainer, set by the thread
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    started: bool = False                   # TrainingStarted seen
    resumed_from_step: int | None = None    # from TrainingStarted: 0 for a fresh run
    finished: bool = False


def default_run_dir(corpus_name: str) -> Path:
    return Path(DEFAULT_RUNS_DIR) / corpus_name


def quiet_tensorflow() -> None:
    """Before TensorFlow is imported: no C++ log lines, no Python warnings from it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import warnings

    warnings.filterwarnings("ignore", module=r"(tensorflow|keras|absl|h5py)(\.|$)")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def parse_temperatures(value: str) -> tuple[tuple[float, ...] | None, str | None]:
    parts = [part.strip() for part in value.replace(" ", ",").split(",") if part.strip()]
    if not 1 <= len(parts) <= MAX_TEMPERATURES:
        return None, f"give between 1 and {MAX_TEMPERATURES} temperatures, separated by commas"
    temperatures = []
    for part in parts:
        try:
            t = float(part)
        except ValueError:
            return None, f"{part!r} is not a number"
        if not 0.0 <= t <= 10.0 or t != t:
            return None, f"{part} is out of range: temperatures must be between 0 and 10"
        temperatures.append(t)
    return tuple(temperatures), None


class CharlmApp(App[int]):
    """Training progress on top, generated text streaming below."""

    CSS_PATH = "app.tcss"
    TITLE = "charlm-tui"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (34, "-tall")]
    COMMANDS = App.COMMANDS | {CharlmCommands}
    BINDINGS = [Binding(k.key, k.action, k.label, key_display=k.key_display, tooltip=k.detail)
                for k in KEYS]

    def __init__(self, options: AppOptions) -> None:
        super().__init__()
        self.options = options
        self.config = options.config
        self.mode = "sample" if options.no_train else "train"
        self.temperatures = tuple(options.config.temperatures)
        self.sample_length = options.config.sample_length
        self.pinned_seed: str | None = None
        self.sampler = None
        self.corpus = None
        self.excerpts: list[str] = []  # sampling only: seed texts saved with the run
        self.run_state: Run | None = None
        self.phase = "loading"
        self._generation = 0
        self._rng = np.random.default_rng(options.seed)
        self._quitting = False
        self._pending_round: SamplerReady | None = None

    # -- layout ------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        config = self.config
        yield RunHeader(HeaderInfo(
            corpus=self.options.corpus, layers=config.layers, units=config.units,
            preset=config.preset, objective=config.objective,
            run_dir=self.options.run_dir or "", mode=self.mode), id="header")
        yield TrainingPane(id="training")
        yield GenerationPane(self.temperatures, id="generation")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.generation_pane.set_placeholder("waiting for the model (TensorFlow is loading)…")
        if self.mode == "sample":
            self._generation += 1
            spec = self.options.corpus
            run_dir = Path(self.options.run_dir or default_run_dir(Path(spec).stem))
            self.run_state = Run(self._generation, spec, run_dir, self.config)
            self.header.set_info(run_dir=str(run_dir))
            self.set_phase("loading", "opening the run (loading TensorFlow)…")
            self.open_run(self.run_state)
        else:
            self.training_pane.set_status("loading the corpus…", "loading")
            self.start_run(self.options.corpus, self.options.run_dir, fresh=self.options.fresh)

    # The main screen's widgets, by reference: `query_one` on the app searches the
    # active screen, which is a dialog while one is open.
    @property
    def header(self) -> RunHeader:
        return self._main_screen.query_one(RunHeader)

    @property
    def training_pane(self) -> TrainingPane:
        return self._main_screen.query_one(TrainingPane)

    @property
    def generation_pane(self) -> GenerationPane:
        return self._main_screen.query_one(GenerationPane)

    @property
    def _main_screen(self):
        return self.screen_stack[0]

    @property
    def trainer(self):
        return self.run_state.trainer if self.run_state is not None else None

    def set_phase(self, phase: str, status: str) -> None:
        changed = phase != self.phase
        self.phase = phase
        self.training_pane.set_status(status, phase)
        if changed:  # the Footer is rebuilt on this: not for every status line
            self.refresh_bindings()

    # -- starting and stopping runs ------------------------------------------------------
    def start_run(self, source, run_dir: str | Path | None, *, fresh: bool = False) -> Run:
        """Train on `source` (a corpus spec, or a loaded Corpus) in `run_dir`."""
        self._generation += 1
        spec = source if isinstance(source, str) else source.source
        run = Run(self._generation, spec, Path(run_dir) if run_dir else None, self.config, fresh=fresh)
        if not isinstance(source, str):
            run.corpus = source
        self.run_state = run
        self.sampler = None
        self.pinned_seed = None
        self._pending_round = None
        self.generation_pane.stop_round()
        self.training_pane.reset()
        self.set_phase("loading", "loading the corpus…" if isinstance(source, str) else "loading TensorFlow…")
        self._train(run, source)
        return run

    async def stop_run(self, status: str = "saving a checkpoint…") -> None:
        """Stop the current run (its trainer saves a checkpoint) and wait for its thread."""
        run = self.run_state
        if run is None or run.done.is_set():
            return
        run.stop.set()
        trainer = run.trainer
        if trainer is not None:
            trainer.stop()
        if self.screen_stack:  # (not while the app is being torn down)
            self.set_phase("stopping", status)
        deadline = time.monotonic() + STOP_TIMEOUT
        while not run.done.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    @work(thread=True, exclusive=True, group="engine", exit_on_error=False)
    def _train(self, run: Run, source) -> None:
        """The training thread: corpus, TensorFlow, Trainer.run()."""
        generation = run.generation
        post = self.post_message
        with self.engine_thread(run, "training thread failed", "Training stopped"):
            corpus = run.corpus
            if corpus is None:
                from engine.corpus import load_corpus

                corpus = load_corpus(
                    source, lowercase=run.config.lowercase, encoding=self.options.encoding,
                    on_notice=lambda message: post(EngineEvent(events.Notice(message), generation)),
                    on_progress=_throttled_progress(post, generation))
                run.corpus = corpus
            if run.run_dir is None:
                run.run_dir = default_run_dir(corpus.name)
            post(CorpusReady(corpus, str(run.run_dir), generation))
            if run.stop.is_set():
                return
            post(LoadingStatus("loading TensorFlow…", generation))
            quiet_tensorflow()
            from engine.tfsetup import keras

            keras()
            from engine.training import Trainer

            if run.stop.is_set():
                return
            post(LoadingStatus("building the model…", generation))

            def on_event(event) -> None:
                history = None
                if isinstance(event, events.TrainingStarted) and event.resumed_from_step:
                    from engine.rundir import read_metrics

                    with contextlib.suppress(CharlmError):
                        history = read_metrics(run.run_dir)
                post(EngineEvent(event, generation, history))

            trainer = Trainer(corpus, run.config, run.run_dir, on_event=on_event,
                              fresh=run.fresh, sample_each_epoch=False)
            run.trainer = trainer
            if run.stop.is_set():
                trainer.close()
                return
            finished = trainer.run()
            post(WorkerDone(generation, finished))

    @contextlib.contextmanager
    def engine_thread(self, run: Run, failure: str, title: str):
        """How every engine thread ends: a refusal (CharlmError) is shown under `title`;
        anything else is a bug, logged with its traceback and shown, the app staying
        usable; `run.done` is set however it ends."""
        try:
            yield
        except CharlmError as error:
            self.post_message(EngineFailed(str(error), run.generation, title=title))
        except Exception as error:
            log.error("%s:\n%s", failure, traceback.format_exc())
            self.post_message(EngineFailed(f"{type(error).__name__}: {error}", run.generation,
                                           title="Unexpected error"))
        finally:
            run.done.set()

    @work(thread=True, exclusive=True, group="engine", exit_on_error=False)
    def open_run(self, run: Run) -> None:
        """Sampling only: load the saved model, its config, metrics and corpus."""
        generation, run_dir = run.generation, run.run_dir
        post = self.post_message
        with self.engine_thread(run, "opening the run failed", "Cannot open the run"):
            quiet_tensorflow()
            from engine.errors import RunDirError
            from engine.rundir import RunDir, read_metrics
            from engine.sampler import Sampler
            from engine.tfsetup import device_name

            saved = RunDir(run_dir)
            if not saved.path.is_dir():
                raise RunDirError(f"no such run directory: {saved.path}")
            config, vocab = saved.load_config(), saved.load_vocab()
            meta = saved.corpus_meta()
            model = saved.load_model(compile=False, on_notice=lambda message: post(
                EngineEvent(events.Notice(message), generation)))
            try:
                sampler = Sampler.from_keras_model(model, vocab, lowercase=config.lowercase)
            except ValueError as error:
                raise RunDirError(f"{saved.path} cannot be sampled: {error}") from None
            corpus = self._corpus_for_seeds(meta, config, sampler)
            metrics = read_metrics(run_dir)
            post(RunOpened(sampler, config, metrics, corpus, meta, device_name(),
                           int(model.count_params()), generation))

    def _corpus_for_seeds(self, meta: dict, config: TrainConfig, sampler):
        """The training text, for random seed texts, if it is on this machine: the path
        the run was trained on, else its named corpus when that needs no download. None
        otherwise (the run's saved excerpts, or the model itself, provide seeds)."""
        from engine.corpus import load_corpus, named_corpora

        candidates = []
        source, name = meta.get("source"), meta.get("name")
        if isinstance(source, str) and source and os.path.exists(source):
            candidates.append(source)
        if isinstance(name, str) and name in named_corpora() and builtin_is_local(name):
            candidates.append(name)
        for spec in candidates:
            try:
                corpus = load_corpus(spec, lowercase=config.lowercase, encoding=self.options.encoding)
            except CharlmError:
                continue
            if set(corpus.vocab) <= set(sampler.vocab):
                return corpus
        return None

    # -- messages from the threads ---------------------------------------------------------
    def _current(self, generation: int) -> bool:
        """A message of the current run, while the main screen is up (not during exit)."""
        return (self.run_state is not None and generation == self.run_state.generation
                and bool(self.screen_stack))

    def on_loading_status(self, message: LoadingStatus) -> None:
        if self._current(message.generation) and self.phase == "loading":
            self.set_phase("loading", message.text)

    def on_corpus_ready(self, message: CorpusReady) -> None:
        if not self._current(message.generation):
            return
        corpus = message.corpus
        self.corpus = corpus
        with contextlib.suppress(Exception):
            remember_corpus(self.run_state.corpus_spec, corpus)
        self.header.set_info(corpus=corpus.name, corpus_chars=len(corpus), vocab=len(corpus.vocab),
                             run_dir=message.run_dir, parameters=None)

    def on_run_opened(self, message: RunOpened) -> None:
        if not self._current(message.generation):
            return
        config, meta = message.config, message.corpus_meta
        self.config = config
        self.sampler = message.sampler
        self.corpus = message.corpus
        excerpts = meta.get("excerpts") if isinstance(meta.get("excerpts"), list) else []
        self.excerpts = [e for e in excerpts if isinstance(e, str) and e]
        self.header.set_info(
            corpus=meta.get("name") or (message.corpus.name if message.corpus else "?"),
            corpus_chars=meta.get("chars") or (len(message.corpus) if message.corpus else None),
            vocab=len(message.sampler.vocab), layers=config.layers, units=config.units,
            parameters=message.parameters, preset=config.preset, objective=config.objective,
            device=message.device, run_dir=str(self.run_state.run_dir), mode="sample")
        pane = self.training_pane
        pane.load_history(message.metrics)
        pane.state.summary = (f"maxlen {config.maxlen} · batch {config.batch_size} · "
                              f"{config.optimizer} lr {config.lr:g}")
        self.set_phase("sampling", "sampling only (--no-train)")
        self.start_round("from the saved model")

    def on_engine_event(self, message: EngineEvent) -> None:
        if not self._current(message.generation):
            return
        event = message.event
        pane = self.training_pane
        run = self.run_state
        if isinstance(event, events.BatchProgress):
            pane.batch_progress(event)
            if self.phase in ("loading", "training"):
                # After the last batch of an epoch the held-out text is scored (seconds
                # on a big corpus): say so rather than look stuck.
                status = ("training · scoring held-out text…"
                          if event.batch >= event.batches_per_epoch else "training")
                if self.phase == "loading" or pane.state.status != status:
                    self.set_phase("training", status)
        elif isinstance(event, events.TrainingStarted):
            run.started = True
            run.resumed_from_step = event.resumed_from_step
            self.header.set_info(corpus=event.corpus_name, corpus_chars=event.corpus_chars,
                                 vocab=event.vocab_size, parameters=event.parameters,
                                 device=event.device, run_dir=event.run_dir)
            pane.training_started(event, run.config)
            if message.history:
                pane.load_history(message.history, event.steps_per_epoch)
            resumed = f" (resumed at step {event.resumed_from_step:,})" if event.resumed_from_step else ""
            self.set_phase("training", "training" + resumed)
            self.request_samples("before training" if not event.resumed_from_step
                                 else f"resumed at step {event.resumed_from_step:,}")
        elif isinstance(event, events.EpochEnd):
            pane.epoch_end(event)
            if self.phase == "training":
                self.set_phase("training", "training")
            self.request_samples(f"after epoch {event.epoch}")
        elif isinstance(event, events.Notice):
            self.notify(event.message, title="Note", severity="warning", timeout=10)
        elif isinstance(event, events.TrainingFinished):
            run.finished = True
            pane.finished(event)
            if event.reason != "stopped":
                reasons = {"epochs": f"finished: {event.epoch} epochs",
                           "steps": f"finished: {event.step:,} steps",
                           "time_budget": "finished: time budget reached"}
                self.set_phase("finished", reasons.get(event.reason, f"finished ({event.reason})"))
        # CheckpointSaved: nothing to show; SamplesGenerated: the app samples itself.

    def on_engine_failed(self, message: EngineFailed) -> None:
        if not self._current(message.generation):
            return
        hint = "\n(r retrains from scratch, c picks another corpus)" if self.mode == "train" else ""
        self.notify(message.message + hint, title=message.title, severity="error", timeout=15)
        self.set_phase("error", f"{message.title.lower()}: {message.message}")
        self.generation_pane.set_placeholder("no model: press r to start over or c for another corpus"
                                             if self.mode == "train" else "no model to sample from")

    def on_worker_done(self, message: WorkerDone) -> None:
        if self._current(message.generation) and self.phase == "stopping":
            self.set_phase("finished", "stopped (checkpoint saved)")

    def on_sampler_ready(self, message: SamplerReady) -> None:
        if not self._current(message.generation):
            return
        first = self.sampler is None
        self.sampler = message.sampler
        if first:
            self.refresh_bindings()
        if self.generation_pane.streaming and not message.now:
            # An epoch ended while a round is still streaming: let it finish (it would
            # never be readable when epochs are short); the newest waiting round follows.
            self._pending_round = message
            return
        self._pending_round = None
        self.start_round(message.reason)

    def on_generation_pane_round_finished(self, message: GenerationPane.RoundFinished) -> None:
        pending, self._pending_round = self._pending_round, None
        if pending is not None and self._current(pending.generation):
            self.sampler = pending.sampler
            self.start_round(pending.reason)

    def on_generation_pane_round_failed(self, message: GenerationPane.RoundFailed) -> None:
        self.notify(message.error, title="Cannot sample", severity="error", timeout=8)

    # -- sampling ------------------------------------------------------------------------------
    def request_samples(self, reason: str, now: bool = False) -> None:
        """A round with a fresh copy of the weights (taken on a thread). `now`: replace
        the round in progress (the user asked), else queue behind it."""
        if self.mode == "sample":
            self.start_round(reason)
            return
        run = self.run_state
        if run is None or run.trainer is None:
            return
        self._snapshot_weights(run.generation, run.trainer, reason, now)

    # Not exclusive: a newer request would cancel one not yet started, and an epoch ending
    # just after `s` would swallow the user's resample.
    @work(thread=True, group="sampler", exit_on_error=False)
    def _snapshot_weights(self, generation: int, trainer, reason: str, now: bool) -> None:
        try:
            sampler = trainer.sampler()
        except CharlmError:
            return  # the model is not built yet: the next epoch brings a round
        except Exception:
            log.error("snapshot of the weights failed:\n%s", traceback.format_exc())
            return
        self.post_message(SamplerReady(sampler, generation, reason, now))

    def start_round(self, label: str) -> None:
        if self.sampler is None:
            return
        self._pending_round = None
        seed_text = self.pinned_seed or self.random_seed_text()
        seed = int(self._rng.integers(2**31))
        stream = self.sampler.stream(seed_text, self.temperatures, self.sample_length, seed=seed)
        self.generation_pane.start_round(stream, seed_text, self.sample_length, label)

    def random_seed_text(self) -> str:
        length = SEED_CHARS
        if self.corpus is not None and len(self.corpus) > 0:
            return self.corpus.random_text(length, self._rng)
        usable = [e for e in self.excerpts if _encodable(self.sampler, e)]
        if usable:  # sampling only, the corpus elsewhere: the excerpts saved with the run
            return usable[int(self._rng.integers(len(usable)))]
        # No text at all: let the model write one.
        vocab = self.sampler.vocab
        letters = [ch for ch in vocab if ch.isalpha()] or list(vocab)
        start = letters[int(self._rng.integers(len(letters)))]
        written = self.sampler.generate(start, [0.5], length - 1, seed=int(self._rng.integers(2**31)))
        return start + written[0.5]

    # -- actions ----------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in TRAINING_ONLY and self.mode == "sample":
            return False
        if action == "toggle_pause":
            return True if self.phase in ("training", "paused") and self.trainer is not None else None
        if action in ("retrain", "swap_corpus"):
            return None if self.phase == "stopping" else True
        if action in NEEDS_SAMPLER:
            return True if self.sampler is not None else None
        return True

    def palette_commands(self):
        for key in KEYS:
            if self.check_action(key.action, ()):
                yield key.title, key.detail, key.action

    def action_resample(self) -> None:
        self.pinned_seed = None
        self.request_samples("resampled", now=True)

    def action_toggle_colour(self) -> None:
        pane = self.generation_pane
        pane.set_colour(not pane.colour)

    def action_toggle_pause(self) -> None:
        trainer = self.trainer
        if trainer is None:
            return
        if self.phase == "paused":
            trainer.resume()
            self.set_phase("training", "training")
        elif self.phase == "training":
            trainer.pause()
            self.set_phase("paused", "paused (p resumes)")

    def action_edit_seed(self) -> None:
        if self.sampler is None:
            return
        round_ = self.generation_pane.round
        current = self.pinned_seed or (round_.seed if round_ else "")

        def check(value: str):
            if not value:
                return None, "the seed text is empty"
            try:
                self.sampler.encode(value)
            except ValueError as error:
                return None, f"{error}; use characters of the corpus"
            return value.lower() if getattr(self.sampler, "lowercase", False) else value, None

        def apply(value) -> None:
            if value:
                self.pinned_seed = value
                self.start_round("your seed text")

        self.push_screen(PromptScreen(
            "Seed text", "Every round starts from this text until s picks a random one. "
            "Only characters the model knows are allowed.", current, check), apply)

    def action_edit_temperatures(self) -> None:
        current = ", ".join(f"{t:g}" for t in self.temperatures)

        def check(value: str):
            return parse_temperatures(value)

        async def apply(value) -> None:
            if value:
                self.temperatures = tuple(value)
                await self.generation_pane.set_temperatures(self.temperatures)
                if self.sampler is not None:
                    self.start_round("new temperatures")

        self.push_screen(PromptScreen(
            "Temperatures", "1 to 6 values between 0 and 10, separated by commas (0 is greedy).",
            current, check, placeholder="0.2, 0.5, 1.0, 1.2"), apply)

    def action_retrain(self) -> None:
        run = self.run_state
        if run is None or self.mode != "train":
            return
        where = display_path(run.run_dir) if run.run_dir else "the run directory"

        async def answer(yes: bool | None) -> None:
            if yes:
                await self.retrain()

        self.push_screen(ConfirmScreen(
            "Retrain from scratch?",
            f"The current model is checkpointed, then training starts over from step 0 in "
            f"{where} (its metrics and samples are replaced)."), answer)

    async def retrain(self) -> None:
        run = self.run_state
        await self.stop_run()
        self.start_run(run.corpus if run.corpus is not None else run.corpus_spec, run.run_dir, fresh=True)

    def action_swap_corpus(self) -> None:
        if self.mode != "train":
            return
        current = self.corpus.name if self.corpus is not None else None

        async def chosen(result) -> None:
            if result:
                spec, corpus = result
                await self.swap_corpus(corpus)

        self.push_screen(CorpusPicker(current, lowercase=self.config.lowercase,
                                      encoding=self.options.encoding, config=self.config), chosen)

    async def swap_corpus(self, corpus) -> None:
        await self.stop_run()
        self.start_run(corpus, default_run_dir(corpus.name))

    def action_export(self) -> None:
        run = self.run_state
        if run is None or run.run_dir is None or self.generation_pane.round is None:
            self.notify("nothing to export yet", severity="warning")
            return
        state = self.training_pane.state
        self.export_samples_to(run.run_dir, "", f"epoch {state.epoch} · step {state.step:,}")

    def export_samples_to(self, folder: Path, source: str, position: str) -> None:
        """Write the current samples, with a header saying where they came from, to `folder`."""
        info = self.header.info
        stamp = time.strftime("%Y%m%d-%H%M%S")
        text = (f"# charlm-tui samples{source}, {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                f"# corpus {info.corpus} · model LSTM {info.layers}x{info.units} · {position}\n"
                + self.generation_pane.export_text())
        try:
            path = export_samples(folder, f"samples-{stamp}", text)
        except OSError as error:
            self.notify(f"could not export the samples: {error.strerror or error}",
                        title="Export failed", severity="error", timeout=10)
            return
        self.notify(display_path(path), title="Samples exported")

    def action_help(self) -> None:
        rows = [(k.key_display or k.key, k.label, k.detail) for k in KEYS]
        rows.append(("ctrl+p", "Palette", "every action by name"))
        self.push_screen(HelpScreen(rows))

    async def action_quit(self) -> None:
        if self._quitting:
            return
        self._quitting = True
        await self.stop_run("saving a checkpoint before quitting…")
        error = getattr(self.trainer, "checkpoint_error", None)
        if error is None:
            self.exit(0)
            return
        # The last checkpoint failed (a full disk...): the weights are only in memory.
        self._quitting = False
        self.set_phase("error", f"checkpoint not saved: {error}")

        def answer(quit_anyway: bool | None) -> None:
            if quit_anyway:
                self.exit(0)
            else:
                self.retry_checkpoint(self.trainer)

        self.push_screen(ConfirmScreen(
            "The checkpoint was not saved",
            f"{error}. Quit anyway and lose the training since the last checkpoint, or free "
            "some space and retry?", yes="Quit anyway", no="Retry"), answer)

    @work(thread=True, exclusive=True, group="checkpoint", exit_on_error=False)
    def retry_checkpoint(self, trainer) -> None:
        try:
            trainer.save_checkpoint()
        except CharlmError as error:
            self.call_from_thread(self.notify, str(error), title="Checkpoint failed again",
                                  severity="error", timeout=10)
            self.call_from_thread(self.run_action, "quit")  # asks again
            return
        self.call_from_thread(self.exit, 0)

    # -- shutdown safety net ------------------------------------------------------------------
    async def on_unmount(self) -> None:
        """Every way out (q, ctrl+q, an exception in the UI) passes here: stop the
        trainer (it saves a checkpoint) before asyncio waits for the worker threads,
        which would otherwise train on, invisibly, to the last epoch."""
        await self.stop_run()

    def stop_threads(self, timeout: float = STOP_TIMEOUT) -> None:
        """From outside the event loop (after it ended): stop the trainer and wait."""
        run = self.run_state
        if run is None:
            return
        run.stop.set()
        if run.trainer is not None:
            run.trainer.stop()
        run.done.wait(timeout)


def _encodable(sampler, text: str) -> bool:
    try:
        sampler.encode(text)
    except ValueError:
        return False
    return True


def _throttled_progress(post, generation: int):
    last = [0.0]

    def on_progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.2 or done >= total:
            last[0] = now
            post(LoadingStatus(f"loading the corpus… {done / max(total, 1):.0%}", generation))

    return on_progress


def export_samples(run_dir: Path, name: str, text: str) -> Path:
    """Write `text` to a new file run_dir/name.txt (name-2.txt... if taken), atomically,
    with the engine's one writer; a failure is an OSError, as export_samples_to expects."""
    from engine.errors import RunDirError
    from engine.rundir import write_new_file

    try:
        return write_new_file(run_dir, name, text)
    except RunDirError as error:
        raise OSError(str(error)) from None


# -- entry points -------------------------------------------------------------------------------
def build_app(options: AppOptions) -> CharlmApp:
    return CharlmApp(options)


@contextlib.contextmanager
def _stderr_to_log(log_path: Path):
    """Point fd 2 at a log file while the app runs, so C++ writes from TensorFlow cannot
    corrupt the screen; Textual draws on a duplicate of the terminal's descriptor."""
    stream = sys.__stderr__
    try:
        terminal_fd = stream.fileno() if stream is not None else None
    except (OSError, ValueError):
        terminal_fd = None
    if terminal_fd is None or not os.isatty(terminal_fd):
        yield  # not a terminal (piped, tests): nothing to protect
        return
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "a", encoding="utf-8", buffering=1)
    except OSError:
        log_file = open(os.devnull, "w", encoding="utf-8")
    saved_fd = os.dup(terminal_fd)
    drawing = os.fdopen(os.dup(terminal_fd), "w", encoding=stream.encoding or "utf-8",
                        errors="replace", buffering=1)
    os.dup2(log_file.fileno(), terminal_fd)
    sys.__stderr__ = drawing  # Textual's Linux driver writes to sys.__stderr__
    handler = logging.StreamHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        with contextlib.suppress(OSError, ValueError):
            drawing.flush()
        os.dup2(saved_fd, terminal_fd)
        os.close(saved_fd)
        sys.__stderr__ = stream
        with contextlib.suppress(OSError, ValueError):
            drawing.close()
        log_file.close()


def run_app(options: AppOptions) -> int:
    """Run the app in this terminal; the terminal is restored and the checkpoint saved
    whatever way it ends."""
    quiet_tensorflow()
    log_dir = Path(options.run_dir) if options.run_dir else Path(DEFAULT_RUNS_DIR)
    return run_in_terminal(build_app(options), log_dir / "charlm-tui.log")


def run_in_terminal(app: "CharlmApp", log_path: Path) -> int:
    """Run `app` with fd 2 sent to `log_path`; stop its threads however it ends."""
    try:
        with _stderr_to_log(log_path):
            try:
                result = app.run()
            finally:
                app.stop_threads()
    except KeyboardInterrupt:
        app.stop_threads()
        return 130
    if app.return_code not in (None, 0):
        return app.return_code
    return int(result or 0)
