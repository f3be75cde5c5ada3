"""The main screen: the run header, the training pane and the generation pane, as views
of one source of engine events.

The source (tui/sources.py) is a RunSession training here, or a RunFollower reading a
run directory: once for a saved run (--no-train) or continuously for a run another
process trains (watch). Either way the events arrive as `RunEvents`, are folded by
engine.progress.reduce, and drive the panes through one code path; what differs is
asked of the source. A new generation round starts from the model as it is whenever
the source says (tui/rounds.py keeps the rules of rounds). The keys are in
tui/screens/run_keys.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback

from textual import work
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer

from engine import events, progress
from engine.errors import CharlmError
from tui.messages import RunEvents, SamplerReady, SamplesMeasured, SeedCorpusReady
from tui.rounds import Offer, Rounds
from tui.screens.run_keys import RunKeys
from tui.sources import RunSource, make_source
from tui.widgets.generation import GenerationPane
from tui.widgets.header import HeaderInfo, RunHeader
from tui.widgets.training import TrainingPane

log = logging.getLogger("charlm.tui")


class MainScreen(RunKeys, Screen):
    """Everything the app shows of one run; `start` swaps in another run."""

    BINDINGS = RunKeys.KEY_BINDINGS  # (Textual reads BINDINGS of DOM nodes' classes only)

    def __init__(self, options, make_source=make_source) -> None:
        super().__init__()
        self.options = options          # tui.app.AppOptions
        self.make_source = make_source  # (options, request, on_events) -> RunSource; tests script one
        self.generation = 0             # which source: events of a replaced one are dropped
        self.source: RunSource = self._make_source(options.request)
        self.sample_length = options.sample_length or options.config_defaults().sample_length
        self.rounds = Rounds(options.seed)
        self.preparing = self.source.preparing
        self.failure: str | None = None
        self.last_event_at = time.monotonic()

    def compose(self) -> ComposeResult:
        yield RunHeader(HeaderInfo(corpus=self.options.corpus, run_dir=self.options.run_dir or "",
                                   mode=self.options.mode), id="header")
        yield TrainingPane(id="training")
        yield GenerationPane(self.options.temperatures or self.options.config_defaults().temperatures,
                             id="generation")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        if self.source.goes_stale:
            self.set_interval(5.0, self._show_status)  # "no new metrics for N s"
        self._show_source()

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

    @property
    def sampler(self):
        """The sampler of the rounds, None until the model has come."""
        return self.rounds.sampler

    @property
    def session(self):
        """The RunSession training here, or None (saved and watched runs, or none started)."""
        return self.source.session if self.source.started else None

    # -- the source of events ---------------------------------------------------------------
    def _make_source(self, request) -> RunSource:
        self.generation += 1
        generation = self.generation

        def on_events(batch) -> None:
            tick = len(batch) == 1 and isinstance(batch[0], events.BatchProgress)
            self.post_message(RunEvents(tuple(batch), generation, tick=tick))

        return self.make_source(self.options, request, on_events)

    def start(self, request) -> None:
        """Show a new run: train `request` (retrain, another corpus)."""
        self.source = self._make_source(request)
        self._show_source()

    def _show_source(self) -> None:
        self.rounds.reset(seed_corpus_known=False)
        self.failure = None
        self.preparing = self.source.preparing
        self.generation_pane.stop_round()
        self.generation_pane.set_placeholder(self.source.placeholder)
        self.training_pane.reset()
        self._show_status()
        self.source.start()

    async def stop(self, status: str = "saving a checkpoint…", timeout: float = 120.0) -> None:
        """Stop the source (a trainer saves a checkpoint) and wait for its thread."""
        source = self.source
        if not source.started or source.done.is_set():
            return
        source.stop()
        for pane in self.query(TrainingPane):  # (none while the app is being torn down)
            pane.set_status(status, "stopping")
        deadline = time.monotonic() + timeout
        while not source.done.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

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
        header, source = self.header, self.source
        if isinstance(event, events.Preparing):
            self.preparing = event.text
        elif isinstance(event, events.CorpusReady):
            header.set_info(corpus=event.name, corpus_chars=event.chars or None, vocab=event.vocab_size,
                            run_dir=event.run_dir, **source.header_fields(event))
            self._corpus_ready()
        elif isinstance(event, events.TrainingStarted) and event.device:
            # (a followed run does not know the trainer's)
            header.set_info(corpus=event.corpus_name, corpus_chars=event.corpus_chars,
                            vocab=event.vocab_size, parameters=event.parameters, device=event.device,
                            run_dir=event.run_dir)
        elif isinstance(event, events.CheckpointSaved):
            header.set_info(**source.header_fields(event))
        elif isinstance(event, events.Notice):
            self.app.notify(event.message, title="Note", severity="warning", timeout=10)
        elif isinstance(event, events.TrainingFailed):
            self._failed(event.message)
        reason = source.round_reason(event, self.progress)
        if reason is not None:
            self.request_round(reason)
        if isinstance(event, (events.StateChanged, events.TrainingStarted, events.TrainingFinished,
                              events.TrainingFailed)):
            self.app.refresh_bindings()  # the keys that apply change with the state

    def _failed(self, message: str) -> None:
        self.failure = message
        retrains = self.source.can_retrain
        hint = "\n(r retrains from scratch, c picks another corpus)" if retrains else ""
        self.app.notify(message + hint, title=self.source.failure_title, severity="error", timeout=15)
        self.generation_pane.set_placeholder("no model: press r to start over or c for another corpus"
                                             if retrains else "no model to sample from")

    def _corpus_ready(self) -> None:
        """Seed texts and, for a saved run, its own sampling settings."""
        source = self.source
        self.rounds.excerpts = list(source.excerpts)
        config = source.saved_config
        if config is not None:
            self.training_pane.set_summary(f"maxlen {config.maxlen} · batch {config.batch_size} · "
                                           f"{config.optimizer} lr {config.lr:g}")
            if self.options.temperatures is None and self.temperatures != tuple(config.temperatures):
                self.run_worker(self.set_temperatures(tuple(config.temperatures)))
            if not self.options.sample_length and config.sample_length:
                self.sample_length = config.sample_length
        self._load_seed_corpus(self.generation, source)

    @work(thread=True, group="seed-corpus", exit_on_error=False)
    def _load_seed_corpus(self, generation: int, source: RunSource) -> None:
        corpus = None
        try:
            corpus = source.seed_corpus()
        finally:  # (None too: the first round waits for this answer)
            self.post_message(SeedCorpusReady(corpus, generation))

    def on_seed_corpus_ready(self, message: SeedCorpusReady) -> None:
        if message.generation == self.generation:
            first = self.sampler is None
            self._start_round(self.rounds.seed_corpus_found(message.corpus, self.generation_pane.streaming),
                              first)

    # -- the status line -------------------------------------------------------------------------
    @property
    def phase(self) -> str:
        """loading, training, paused, stopping, finished, error or sampling."""
        if self.failure is not None:
            return "error"
        return self.source.phase(self.progress, self.sampler is not None)

    def _show_status(self) -> None:
        self.training_pane.set_status(*self.status())

    def status(self) -> tuple[str, str]:
        """(the status line, its kind) for the run as it stands."""
        kind = self.phase
        if self.failure is not None:
            return f"{self.source.failure_title.lower()}: {self.failure}", kind
        quiet = time.monotonic() - self.last_event_at
        return self.source.status(self.progress, self.sampler is not None, self.preparing, quiet), kind

    # -- sampling ----------------------------------------------------------------------------------
    def request_round(self, reason: str, now: bool = False) -> None:
        """A round from the model as it is now. `now`: replace the round in progress (the
        user asked), else queue behind it."""
        if self.source.copies_weights:
            self._snapshot_weights(self.generation, self.source, reason, now)
        else:
            self.on_sampler_ready(SamplerReady(self.source.sampler(), self.generation, reason, now))

    # Not exclusive: a newer request would cancel one not yet started, and an epoch ending
    # just after `s` would swallow the user's resample.
    @work(thread=True, group="sampler", exit_on_error=False)
    def _snapshot_weights(self, generation: int, source: RunSource, reason: str, now: bool) -> None:
        try:
            sampler = source.sampler()
        except Exception:
            log.error("snapshot of the weights failed:\n%s", traceback.format_exc())
            return
        if sampler is not None:  # (None: the model is not built yet; the first epoch brings one)
            self.post_message(SamplerReady(sampler, generation, reason, now))

    def on_sampler_ready(self, message: SamplerReady) -> None:
        if message.generation != self.generation or message.sampler is None:
            return
        first = self.sampler is None
        self._start_round(self.rounds.offer(Offer(message.sampler, message.reason, message.now),
                                            self.generation_pane.streaming), first)

    def on_generation_pane_round_finished(self, message: GenerationPane.RoundFinished) -> None:
        corpus = self.rounds.seed_corpus
        if corpus is not None:
            texts = tuple(column.generated for column in self.generation_pane.columns)
            self._measure_copying(self.generation, message.number, corpus, texts)
        self._start_round(self.rounds.round_finished())

    @work(thread=True, group="memorization", exit_on_error=False)
    def _measure_copying(self, generation: int, round_number: int, corpus, texts: tuple) -> None:
        """How much of each column is copied from the training text (the index is built
        once per corpus, on this thread: seconds for a 100 MB corpus)."""
        from engine.modeling.novelty import index_for

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

    def _start_round(self, label: str | None, first: bool = False) -> None:
        """Start the round the rules of rounds (tui/rounds.py) said, if any; `first`: there
        was no sampler before (the keys that sample apply once there is)."""
        if first and self.sampler is not None:
            self.app.refresh_bindings()
            self._show_status()
        if label is not None:
            self.start_round(label)

    def start_round(self, label: str) -> None:
        if self.sampler is None:
            return
        seed_text, seed = self.rounds.next_seed()
        distributions: list = []
        stream = self.sampler.stream(seed_text, self.temperatures, self.sample_length, seed=seed,
                                     distributions=distributions)
        self.generation_pane.start_round(stream, seed_text, self.sample_length, label)
        round_ = self.generation_pane.round
        round_.sampler, round_.distributions = self.sampler, distributions  # what the inspector explains

    def pin_seed(self, seed_text: str) -> None:
        self.rounds.pin(seed_text)
        self.start_round("your seed text")

    async def set_temperatures(self, temperatures: tuple[float, ...]) -> None:
        await self.generation_pane.set_temperatures(temperatures)
        if self.sampler is not None:
            self.start_round("new temperatures")
