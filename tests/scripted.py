"""Tests of the app without TensorFlow: a real sampler from seeded numpy weights, and a
RunSource (tui/sources.py) that replays real engine events, so that a Pilot test of the
screen costs a second rather than a model's training.

    numpy_sampler(text)        an engine.modeling.sampler.Sampler over the characters of `text`
    ScriptedSource(...)        a RunSource handing the screen the events a test gives it
    scripted_app(...)          the app, built as the CLI builds it, showing such a source
"""

from __future__ import annotations

import threading

import numpy as np

from engine import events
from engine.modeling.sampler import Sampler, weight_shapes
from tui.sources import TrainingSource


def numpy_sampler(text: str, units: int = 8, seed: int = 0, lowercase: bool = False) -> Sampler:
    """A real sampler over the characters of `text`, its weights drawn from a seeded RNG
    and its output bias at the text's letter frequencies (letter soup with spaces)."""
    vocab = sorted(set(text.lower() if lowercase else text))
    rng = np.random.default_rng(seed)
    weights = {name: rng.normal(0.0, 0.3, size=shape)
               for name, shape in weight_shapes(len(vocab), 1, units).items()}
    counts = np.array([text.count(ch) for ch in vocab], dtype=np.float64) + 1.0
    weights["dense_bias"] = np.log(counts / counts.sum())
    return Sampler.from_weights(vocab, weights, lowercase=lowercase)


class ScriptedSource(TrainingSource):
    """A RunSource whose events are the test's: `emit(*events)` hands them to the screen
    as a trainer's thread would (from any thread). It trains nothing; what it shows and
    when a round starts are a trainer's (TrainingSource's rules), its capabilities too
    unless `trains=False`."""

    copies_weights = False  # (sampler() is at hand: rounds start at once)
    # (TrainingSource's properties ask a session: this has none)
    session = config = corpus_name = encoding = checkpoint_error = run_dir = None

    def __init__(self, on_events, sampler: Sampler | None = None, corpus=None, *, run_dir=None,
                 trains: bool = True, excerpts: tuple[str, ...] = ()) -> None:
        self.on_events = on_events
        self._sampler = sampler
        self.corpus = corpus
        self.run_dir = run_dir
        self.can_pause = self.can_retrain = self.can_swap_corpus = trains
        self.excerpts = excerpts
        self.preparing = "loading the corpus…"
        self.started = self.paused = False
        self.done = threading.Event()

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.done.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    def emit(self, *batch) -> None:
        self.on_events(list(batch))

    def sampler(self):
        return self._sampler

    def seed_corpus(self):
        return self.corpus

    def toggle_pause(self) -> None:
        self.paused = not self.paused
        self.emit(events.StateChanged("paused" if self.paused else "running"))

    def trains(self, corpus) -> bool:
        return False

    def header_fields(self, event) -> dict:
        return {}


def scripted_app(options, **source_options):
    """(the app as the CLI builds it for `options`, a list that receives its ScriptedSource
    once the screen makes it: the test emits the run's events through it)."""
    from tui.app import build_app

    made: list[ScriptedSource] = []

    def make_source(options, request, on_events) -> ScriptedSource:
        made.append(ScriptedSource(on_events, **source_options))
        return made[-1]

    return build_app(options, make_source=make_source), made


class ScriptedRun:
    """The app on a scripted source over a tiny corpus (written into `folder`), with a
    numpy sampler over its characters: `await run.begin(pilot)` says what a trainer
    says first (the corpus is ready, training starts: the first round follows)."""

    def __init__(self, folder, *, trains: bool = True, sample_length: int = 40, seed: int = 3) -> None:
        from engine.data.corpus import load_corpus
        from tests.app_fixtures import app_options, tiny_train_config
        from tests.conftest import tiny_text

        path = folder / "tiny.txt"
        path.write_text(tiny_text(6000, seed=seed), encoding="utf-8")
        self.corpus = load_corpus(path, lowercase=True)  # (the seed-text tests read a lower-cased model)
        self.sampler = numpy_sampler(self.corpus.text(), lowercase=self.corpus.lowercase)
        self.run_dir = folder / "run"
        self.run_dir.mkdir(exist_ok=True)
        options = app_options(path, self.run_dir, config=tiny_train_config(sample_length=sample_length))
        self.app, self.made = scripted_app(options, sampler=self.sampler, corpus=self.corpus,
                                           run_dir=self.run_dir, trains=trains)

    @property
    def source(self) -> ScriptedSource:
        return self.made[-1]

    async def begin(self, pilot, steps_per_epoch: int = 40, epochs: int = 3) -> None:
        from tests.app_fixtures import wait_until

        await wait_until(pilot, lambda: self.made and self.source.started, what="the source")
        corpus, run_dir = self.corpus, str(self.run_dir)
        self.source.emit(
            events.CorpusReady(corpus.name, str(run_dir), len(corpus), len(corpus.vocab), run_dir),
            events.TrainingStarted(corpus.name, len(corpus), len(corpus.vocab), windows_total=700,
                                   windows_train=630, parameters=1234, model_summary="", device="CPU",
                                   run_dir=run_dir, resumed_from_step=0, epoch=1,
                                   steps_per_epoch=steps_per_epoch, epochs=epochs))
