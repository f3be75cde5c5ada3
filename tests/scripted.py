"""Tests of the app without TensorFlow: a real sampler from seeded numpy weights, and a
RunSource (tui/sources.py) that replays real engine events, so that a Pilot test of the
screen costs a second rather than a model's training.

    numpy_sampler(text)        an engine.sampler.Sampler over the characters of `text`
    ScriptedSource(...)        a RunSource handing the screen the events a test gives it
    scripted_app(...)          the app, built as the CLI builds it, showing such a source
"""

from __future__ import annotations

import threading

import numpy as np

from engine import events
from engine.sampler import Sampler, weight_shapes
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
    paused = False          # (TrainingSource's properties ask a session: this has none)
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
        self.started = threading.Event()
        self.done = threading.Event()

    def start(self) -> None:
        self.started.set()

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
