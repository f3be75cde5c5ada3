"""The main screen: the run header, the training pane and the generation pane, as views
of one source of engine events.

The source is a RunSession training here (mode "train"), or a RunFollower reading a
run directory: once for a saved run ("saved", --no-train) or continuously for a run
another process trains ("watch"). Either way the events arrive as `RunEvents`, are
folded by engine.progress.reduce, and drive the panes through one code path. A new
generation round starts from the model as it is whenever the run starts or a
checkpoint is saved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
import traceback
from pathlib import Path

import numpy as np
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer

from engine import events, progress
from engine.errors import CharlmError
from tui.messages import RunEvents, SamplerReady, SamplesMeasured, SeedCorpusReady
from tui.widgets.generation import GenerationPane
from tui.widgets.header import HeaderInfo, RunHeader
from tui.widgets.training import TrainingPane

log = logging.getLogger("charlm.tui")

SEED_CHARS = 60       # a random seed text: the book's window; the sampler reads any length
STALE_AFTER = 30.0    # watch: seconds without new metrics before saying so
# progress.Progress.state -> how the training pane marks it
STATE_KINDS = {"starting": "loading", "running": "training", "paused": "paused", "stopping": "stopping",
               "stopped": "finished", "finished": "finished", "failed": "error"}


class MainScreen(Screen):
    """Everything the app shows of one run; `start` swaps in another run."""

    # issue 19: the inspector and the cells view (tui/widgets/inspector.py, tui/screens/cells.py)
    BINDINGS = [Binding("i", "inspect", "Inspect", show=False,
                        tooltip="the distribution a sample's character was drawn from"),
                Binding("n", "cells", "Cells", show=False, tooltip="colour text by one LSTM cell")]

    def action_inspect(self) -> None:
        from tui.widgets.inspector import open_inspector

        open_inspector(self)

    def action_cells(self) -> None:
        from tui.screens.cells import open_cells

        open_cells(self)

    def on_click(self, event) -> None:
        from tui.widgets.inspector import inspect_click

        inspect_click(self, event)
    # (end of issue 19's part)

    def __init__(self, options) -> None:
        super().__init__()
        self.options = options          # tui.app.AppOptions
        self.mode = options.mode        # "train", "saved" or "watch"
        self.source = None              # engine.session.RunSession or engine.follow.RunFollower
        self.generation = 0
        self.sample_length = options.sample_length or options.config_defaults().sample_length
        self.sampler = None
        self.seed_corpus = None         # for random seed texts: the corpus, when on this machine
        self.excerpts: list[str] = []   # else the excerpts saved with the run
        self.seed_corpus_known = False  # whether looking for the training text has ended
        self.pinned_seed: str | None = None
        self.preparing = "loading the corpus…"
        self.failure: str | None = None
        self.last_event_at = time.monotonic()
        self._rng = np.random.default_rng(options.seed)
        self._pending_round: SamplerReady | None = None

    def compose(self) -> ComposeResult:
        yield RunHeader(HeaderInfo(corpus=self.options.corpus, run_dir=self.options.run_dir or "",
                                   mode=self.mode), id="header")
        yield TrainingPane(id="training")
        yield GenerationPane(self.options.temperatures or self.options.config_defaults().temperatures,
                             id="generation")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        if self.mode == "watch":
            self.set_interval(5.0, self._show_status)  # "no new metrics for N s"
        self.start(self.options.request)

    @property
    def header(self) -> RunHeader:
        return self.query_one(RunHeader)

    @property
    def training_pane(self) -> TrainingPane:
        return self.query_one(TrainingPane)

    @property
    def generation_pane(self) -> GenerationPane:
        return self.query_one(GenerationPane)

    @property
    def progress(self) -> progress.Progress:
        return self.training_pane.progress

    @property
    def temperatures(self) -> tuple[float, ...]:
        """One column each: the generation pane holds them."""
        return self.generation_pane.temperatures

    # -- the source of events ---------------------------------------------------------------
    def start(self, request=None) -> None:
        """Show a new run: train `request` (mode "train"), or open/follow the run directory."""
        self.generation += 1
        generation = self.generation
        self.sampler = self.seed_corpus = self._pending_round = self.pinned_seed = self.failure = None
        self.seed_corpus_known = self.mode == "train"  # (training: the corpus is the session's)
        self.excerpts = []
        self.generation_pane.stop_round()
        self.generation_pane.set_placeholder("waiting for the model (TensorFlow is loading)…"
                                             if self.mode == "train" else
                                             "waiting for a checkpoint of the run (loading it)…")
        self.training_pane.reset()
        if self.mode == "train":
            from engine.session import RunSession

            def on_event(event) -> None:
                self.post_message(RunEvents(self._with_history(event), generation,
                                            tick=isinstance(event, events.BatchProgress)))

            self.preparing = "loading the corpus…" if isinstance(request.corpus, str) else "loading TensorFlow…"
            self.source = RunSession(request, on_event)
        else:
            from engine.follow import RunFollower

            self.preparing = "opening the run…"
            self.source = RunFollower(self.options.run_dir, lambda batch: self.post_message(
                RunEvents(tuple(batch), generation)), follow=self.mode == "watch",
                checkpoint=self.options.checkpoint)
        self._show_status()
        self.source.start()

    def _with_history(self, event) -> tuple:
        """A resumed run's plot and epoch list start with what its metrics.jsonl holds."""
        if isinstance(event, events.TrainingStarted) and event.resumed_from_step and event.run_dir:
            from engine.follow import history

            with contextlib.suppress(CharlmError, OSError):
                return (*history(event.run_dir), event)
        return (event,)

    async def stop(self, status: str = "saving a checkpoint…", timeout: float = 120.0) -> None:
        """Stop the source (a trainer saves a checkpoint) and wait for its thread."""
        source = self.source
        if source is None or source.done.is_set():
            return
        source.stop()
        for pane in self.query(TrainingPane):  # (none while the app is being torn down)
            pane.set_status(status, "stopping")
        deadline = time.monotonic() + timeout
        while not source.done.is_set() and time.monotonic() < deadline:
            await _sleep(0.05)

    @property
    def session(self):
        """The RunSession training here, or None (saved and watched runs)."""
        return self.source if self.mode == "train" else None

    # -- events --------------------------------------------------------------------------------
    def on_run_events(self, message: RunEvents) -> None:
        if message.generation != self.generation:
            return
        self.last_event_at = time.monotonic()
        pane = self.training_pane
        shown = pane.progress
        for event in message.events:
            shown = progress.reduce(shown, event)
            pane.add(event)
            self._on_event(event)
        pane.show(shown)
        self._show_status()

    def _on_event(self, event) -> None:
        header = self.header
        if isinstance(event, events.Preparing):
            self.preparing = event.text
        elif isinstance(event, events.CorpusReady):
            header.set_info(corpus=event.name, corpus_chars=event.chars or None, vocab=event.vocab_size,
                            run_dir=event.run_dir)
            self._corpus_ready()
        elif isinstance(event, events.TrainingStarted):
            if event.device:  # (a followed run does not know the trainer's)
                header.set_info(corpus=event.corpus_name, corpus_chars=event.corpus_chars,
                                vocab=event.vocab_size, parameters=event.parameters, device=event.device,
                                run_dir=event.run_dir)
            if self.mode == "train":
                self.request_round("before training" if not event.resumed_from_step
                                   else f"resumed at step {event.resumed_from_step:,}")
        elif isinstance(event, events.CheckpointSaved):
            if self.mode == "train":
                self.request_round(f"after epoch {event.epoch}" if self.progress.batch == 0 or
                                   self.progress.batch == self.progress.batches_per_epoch
                                   else f"checkpoint at step {event.step:,}")
            else:
                self._checkpoint_loaded(event)
        elif isinstance(event, events.Notice):
            self.app.notify(event.message, title="Note", severity="warning", timeout=10)
        elif isinstance(event, events.TrainingFailed):
            self.failure = event.message
            title = "Training stopped" if self.mode == "train" else "Cannot open the run"
            hint = "\n(r retrains from scratch, c picks another corpus)" if self.mode == "train" else ""
            self.app.notify(event.message + hint, title=title, severity="error", timeout=15)
            self.generation_pane.set_placeholder("no model: press r to start over or c for another corpus"
                                                 if self.mode == "train" else "no model to sample from")
        if isinstance(event, (events.StateChanged, events.TrainingStarted, events.TrainingFinished,
                              events.TrainingFailed)):
            self.app.refresh_bindings()  # the keys that apply change with the state

    def _corpus_ready(self) -> None:
        """Header and seed texts: the corpus trained here, or a saved run's settings."""
        source = self.source
        if self.mode == "train":
            config = source.config  # settled by now: what is trained, as watch and --no-train show it
            self.header.set_info(layers=config.layers, units=config.units, preset=config.preset,
                                 objective=config.objective)
            self.seed_corpus = source.corpus
            # Its figures for the picker, and the recent list (a corpus the picker chose
            # arrives loaded: the picker has remembered it).
            if isinstance(source.request.corpus, str):
                with contextlib.suppress(Exception):
                    from tui.screens.corpus_picker import remember_corpus

                    remember_corpus(source.request.corpus, source.corpus, source.request.encoding)
            return
        saved = source.saved
        config = saved.config
        self.excerpts = saved.excerpts
        self.header.set_info(layers=config.layers, units=config.units, preset=config.preset,
                             objective=config.objective, device="CPU")
        self.training_pane.set_summary(f"maxlen {config.maxlen} · batch {config.batch_size} · "
                                       f"{config.optimizer} lr {config.lr:g}")
        if self.options.temperatures is None and self.temperatures != tuple(config.temperatures):
            self.run_worker(self.set_temperatures(tuple(config.temperatures)))
        if not self.options.sample_length and config.sample_length:
            self.sample_length = config.sample_length
        self._load_seed_corpus(self.generation, saved)

    @work(thread=True, group="seed-corpus", exit_on_error=False)
    def _load_seed_corpus(self, generation: int, saved) -> None:
        from engine.follow import seed_corpus

        corpus = None
        try:
            corpus = seed_corpus(saved, self.options.encoding)
        finally:  # (None too: the first round waits for this answer)
            self.post_message(SeedCorpusReady(corpus, generation))

    def on_seed_corpus_ready(self, message: SeedCorpusReady) -> None:
        if message.generation != self.generation:
            return
        self.seed_corpus, self.seed_corpus_known = message.corpus, True
        waiting, self._pending_round = self._pending_round, None
        if waiting is not None and not self.generation_pane.streaming:
            self.on_sampler_ready(waiting)  # the first round, held until now

    def _checkpoint_loaded(self, event: events.CheckpointSaved) -> None:
        saved = self.source.saved
        self.header.set_info(parameters=saved.parameters)
        where = "from the saved model" if self.mode == "saved" else (
            f"checkpoint at step {event.step:,}" if event.step else "new checkpoint")
        self.on_sampler_ready(SamplerReady(self.source.sampler(), self.generation, where))

    # -- the status line -------------------------------------------------------------------------
    @property
    def phase(self) -> str:
        """loading, training, paused, stopping, finished, error or sampling."""
        if self.failure is not None:
            return "error"
        if self.mode == "saved":
            return "sampling" if self.sampler is not None else "loading"
        return STATE_KINDS[self.progress.state]

    def _show_status(self) -> None:
        self.training_pane.set_status(*self.status())

    def status(self) -> tuple[str, str]:
        """(the status line, its kind) for the run as it stands."""
        shown, kind = self.progress, self.phase
        if self.failure is not None:
            title = "training stopped" if self.mode == "train" else "cannot open the run"
            return f"{title}: {self.failure}", kind
        if self.mode == "saved":
            return ("sampling only (--no-train)", kind) if self.sampler is not None else \
                ("opening the run (loading the model)…", kind)
        if self.mode == "watch":
            return self._watch_status(shown), kind
        if shown.state == "starting":
            return self.preparing, kind
        if shown.state == "running":
            # After the last batch of an epoch the held-out text is scored (seconds on a
            # big corpus): say so rather than look stuck.
            scoring = shown.batches_per_epoch and shown.batch >= shown.batches_per_epoch
            return ("training · scoring held-out text…" if scoring else "training"), kind
        if shown.state == "paused":
            return "paused (p resumes)", kind
        if shown.state == "stopping":
            return "saving a checkpoint…", kind
        if shown.state == "stopped":
            return "stopped (checkpoint saved)", kind
        return f"finished: {progress.describe_end(shown.finish_reason)}", kind

    def _watch_status(self, shown: progress.Progress) -> str:
        """Short enough for the stats pane at 120 columns (44 cells): the header says what
        is watched, the bars and numbers where the run is."""
        if shown.state == "starting":
            return self.preparing if self.source is None or self.source.saved is None \
                else "waiting for the trainer's metrics…"
        if shown.state in ("stopped", "finished"):
            return f"the run ended: {progress.describe_end(shown.finish_reason)}"
        quiet = time.monotonic() - self.last_event_at
        if quiet > STALE_AFTER:
            return f"no new metrics for {quiet:.0f} s"
        return "training in another process"

    # -- sampling ----------------------------------------------------------------------------------
    def request_round(self, reason: str, now: bool = False) -> None:
        """A round from the model as it is now (its weights copied on a thread). `now`:
        replace the round in progress (the user asked), else queue behind it."""
        if self.mode != "train":
            self.start_round(reason)
            return
        self._snapshot_weights(self.generation, self.source, reason, now)

    # Not exclusive: a newer request would cancel one not yet started, and an epoch ending
    # just after `s` would swallow the user's resample.
    @work(thread=True, group="sampler", exit_on_error=False)
    def _snapshot_weights(self, generation: int, session, reason: str, now: bool) -> None:
        try:
            sampler = session.sampler()
        except Exception:
            log.error("snapshot of the weights failed:\n%s", traceback.format_exc())
            return
        if sampler is not None:  # (None: the model is not built yet; the first epoch brings one)
            self.post_message(SamplerReady(sampler, generation, reason, now))

    def on_sampler_ready(self, message: SamplerReady) -> None:
        if message.generation != self.generation or message.sampler is None:
            return
        if self.mode != "train" and not self.seed_corpus_known:
            # The first round's seed text comes from the training text when it is on this
            # machine: wait for the answer (whichever comes first, the same round follows).
            self._pending_round = message
            return
        first = self.sampler is None
        self.sampler = message.sampler
        if first:
            self.app.refresh_bindings()
            self._show_status()
        if self.generation_pane.streaming and not message.now:
            # A new model while a round is still streaming: let it finish (it would never
            # be readable when epochs are short); the newest waiting round follows.
            self._pending_round = message
            return
        self._pending_round = None
        self.start_round(message.reason)

    def on_generation_pane_round_finished(self, message: GenerationPane.RoundFinished) -> None:
        if self.seed_corpus is not None:
            texts = tuple(column.generated for column in self.generation_pane.columns)
            self._measure_copying(self.generation, message.number, self.seed_corpus, texts)
        pending, self._pending_round = self._pending_round, None
        if pending is not None and pending.generation == self.generation:
            self.sampler = pending.sampler
            self.start_round(pending.reason)

    @work(thread=True, group="memorization", exit_on_error=False)
    def _measure_copying(self, generation: int, round_number: int, corpus, texts: tuple) -> None:
        """How much of each column is copied from the training text (the index is built
        once per corpus, on this thread: seconds for a 100 MB corpus)."""
        from engine.novelty import index_for

        try:
            index = index_for(corpus)
        except CharlmError:  # too big to index: the columns say nothing
            return
        notes = []
        for text in texts:
            novelty = index.measure(text)
            notes.append("" if novelty.share is None else
                         f"{novelty.share:.0%} copied, run {novelty.longest}" if novelty.longest else
                         f"{novelty.share:.0%} copied")
        self.post_message(SamplesMeasured(round_number, tuple(notes), generation))

    def on_samples_measured(self, message: SamplesMeasured) -> None:
        pane = self.generation_pane
        if message.generation == self.generation and pane.round is not None \
                and pane.round.number == message.round_number:
            for column, note in zip(pane.columns, message.notes):
                column.set_note(note)

    def on_generation_pane_round_failed(self, message: GenerationPane.RoundFailed) -> None:
        self.app.notify(message.error, title="Cannot sample", severity="error", timeout=8)

    def start_round(self, label: str) -> None:
        if self.sampler is None:
            return
        self._pending_round = None
        seed_text = self.pinned_seed or self.random_seed_text()
        stream = self.sampler.stream(seed_text, self.temperatures, self.sample_length,
                                     seed=int(self._rng.integers(2**31)))
        self.generation_pane.start_round(stream, seed_text, self.sample_length, label)
        self.generation_pane.round.sampler = self.sampler  # issue 19: the inspector explains with it

    def random_seed_text(self) -> str:
        corpus = self.seed_corpus
        if corpus is not None and len(corpus) > 0:
            return corpus.random_text(SEED_CHARS, self._rng)
        usable = [e for e in self.excerpts if _encodable(self.sampler, e)]
        if usable:  # the corpus is elsewhere: the excerpts saved with the run
            return usable[int(self._rng.integers(len(usable)))]
        # No text at all: let the model write one.
        vocab = self.sampler.vocab
        letters = [ch for ch in vocab if ch.isalpha()] or list(vocab)
        start = letters[int(self._rng.integers(len(letters)))]
        written = self.sampler.generate(start, [0.5], SEED_CHARS - 1, seed=int(self._rng.integers(2**31)))
        return start + written[0.5]

    def resample(self) -> None:
        self.pinned_seed = None
        self.request_round("resampled", now=True)

    def pin_seed(self, seed_text: str) -> None:
        self.pinned_seed = seed_text
        self.start_round("your seed text")

    async def set_temperatures(self, temperatures: tuple[float, ...]) -> None:
        await self.generation_pane.set_temperatures(temperatures)
        if self.sampler is not None:
            self.start_round("new temperatures")

    # -- what the keys do to the run ---------------------------------------------------------------
    def edit_seed(self) -> None:
        from tui.screens.prompt import PromptScreen
        from tui.visible import restore_controls, visible

        if self.sampler is None:
            return
        round_ = self.generation_pane.round
        current = self.pinned_seed or (round_.seed if round_ else "")
        known = set(self.sampler.vocab)

        def check(value: str):
            # The editor shows the corpus's control characters as pictures (a raw one would
            # command the terminal): turned back here when the model knows them.
            value = restore_controls(value, known.__contains__)
            if not value:
                return None, "the seed text is empty"
            try:
                self.sampler.encode(value)
            except ValueError as error:
                return None, f"{error}; use characters of the corpus"
            return value.lower() if getattr(self.sampler, "lowercase", False) else value, None

        self.app.push_screen(PromptScreen(
            "Seed text", "Every round starts from this text until s picks a random one. It may "
            "span lines (a speaker's name and a newline, say). Only characters the model knows "
            "are allowed.", visible(current), check, multiline=True),
            lambda value: value and self.pin_seed(value))

    def edit_temperatures(self) -> None:
        from engine.config import MAX_TEMPERATURES, TEMPERATURE_RULE
        from tui.keys import parse_temperatures
        from tui.screens.prompt import PromptScreen

        async def apply(value) -> None:
            if value:
                await self.set_temperatures(value)

        self.app.push_screen(PromptScreen(
            "Temperatures", f"1 to {MAX_TEMPERATURES} values separated by commas, each {TEMPERATURE_RULE}.",
            ", ".join(f"{t:g}" for t in self.temperatures), parse_temperatures,
            placeholder="0.2, 0.5, 1.0, 1.2"), apply)

    def retrain(self) -> None:
        """Ask, then checkpoint the run and start it over from step 0 in its directory."""
        from tui.screens.confirm import ConfirmScreen
        from tui.widgets.header import display_path

        session = self.session
        if session is None:
            return
        where = display_path(session.run_dir) if session.run_dir else "the run directory"

        async def answer(yes: bool | None) -> None:
            if yes:
                await self.stop()
                corpus = session.corpus if session.corpus is not None else session.request.corpus
                self.start(dataclasses.replace(session.request, corpus=corpus, run_dir=session.run_dir,
                                               fresh=True))

        self.app.push_screen(ConfirmScreen(
            "Retrain from scratch?",
            f"The current model is checkpointed, then training starts over from step 0 in "
            f"{where}; the previous run is moved, whole, to a sibling folder (.prev-DATE-TIME)."), answer)

    def swap_corpus(self) -> None:
        """Pick another corpus; training goes on in runs/<its name>. The corpus trained
        already keeps training where it is (an explicit --run included)."""
        from engine.session import default_run_dir
        from tui.screens.corpus_picker import CorpusPicker
        from tui.widgets.header import display_path

        session = self.session
        if session is None:
            return
        config = session.config or self.options.config_defaults()

        async def chosen(result) -> None:
            if result:
                corpus = result[1]
                if _same_text(corpus, session.corpus) and not session.done.is_set():
                    where = display_path(session.run_dir) if session.run_dir else "its run directory"
                    self.app.notify(f"{corpus.name} is the corpus being trained: training goes on in {where}",
                                    title="Corpus")
                    return
                await self.stop()
                self.start(dataclasses.replace(session.request, corpus=corpus,
                                               run_dir=default_run_dir(corpus.name), fresh=False))

        current = session.corpus.name if session.corpus is not None else None
        self.app.push_screen(CorpusPicker(current, lowercase=config.lowercase,
                                          encoding=session.request.encoding, config=config), chosen)

    def toggle_pause(self) -> None:
        session = self.session
        if session is not None and self.phase in ("training", "paused"):
            session.resume() if session.paused else session.pause()

    def export(self) -> None:
        """Write the current samples, with where they came from, to a new file: in the run
        directory, or for a watcher (which never writes there) in the current directory."""
        from engine.rundir import write_new_file
        from tui.widgets.header import display_path

        if self.generation_pane.round is None:
            self.app.notify("nothing to export yet", severity="warning")
            return
        run_dir = Path(self.options.run_dir or self.header.info.run_dir)
        folder, source = run_dir, ""
        if self.mode == "watch":
            folder, source = Path.cwd(), f" (watching {run_dir})"
            if folder.resolve() == run_dir.resolve():
                self.app.notify("watching never writes to the run directory: run it from another "
                                "directory to export", severity="warning")
                return
        info, shown = self.header.info, self.progress
        text = (f"# charlm-tui samples{source}, {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                f"# corpus {info.corpus} · model {info.model or 'not built yet'}"
                f"{f' · preset {info.preset}' if info.preset else ''} · "
                f"epoch {shown.epoch} · step {shown.step:,}\n" + self.generation_pane.export_text())
        try:
            path = write_new_file(folder, f"samples-{time.strftime('%Y%m%d-%H%M%S')}", text)
        except CharlmError as error:
            self.app.notify(str(error), title="Export failed", severity="error", timeout=10)
            return
        self.app.notify(display_path(path), title="Samples exported")


def _same_text(chosen, current) -> bool:
    """Whether the picker's choice is the corpus being trained: the same file or folder
    (or the same built-in), read with the same case setting."""
    if chosen is None or current is None or chosen.lowercase != current.lowercase:
        return False
    try:
        return os.path.samefile(chosen.source, current.source)
    except OSError:  # a built-in's description, or a file gone
        return chosen.source == current.source and chosen.name == current.name


def _encodable(sampler, text: str) -> bool:
    try:
        sampler.encode(text)
    except ValueError:
        return False
    return True


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
