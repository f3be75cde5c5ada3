"""Messages the worker threads post to the app.

Engine events arrive on the training thread; the app's `on_event` callback wraps each
one in a message and posts it (`post_message` is thread-safe). Progress messages that
supersede each other implement `can_replace`, so a burst of them queued while the UI
was busy is coalesced into the newest one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message

from engine import events


@dataclass
class EngineEvent(Message):
    """An engine event (TrainingStarted, EpochEnd, CheckpointSaved, Notice, ...)."""

    event: Any
    generation: int  # which training run posted it: events of a replaced run are dropped
    history: list | None = None  # metrics.jsonl rows, with TrainingStarted of a resumed run

    def can_replace(self, message: Message) -> bool:
        # Only progress ticks are coalesced; epochs, checkpoints and notices all count.
        return (isinstance(message, EngineEvent)
                and isinstance(self.event, events.BatchProgress)
                and isinstance(message.event, events.BatchProgress)
                and message.generation == self.generation)


@dataclass
class LoadingStatus(Message):
    """What the worker is doing before training starts (loading TensorFlow, ...)."""

    text: str
    generation: int

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, LoadingStatus)


@dataclass
class CorpusReady(Message):
    """The corpus of a run is loaded (the header can show it before TensorFlow is up)."""

    corpus: Any  # engine.corpus.Corpus
    run_dir: str
    generation: int


@dataclass
class SamplerReady(Message):
    """A sampler with a copy of the current weights, for a new generation round."""

    sampler: Any  # engine.sampler.Sampler
    generation: int
    reason: str = ""
    now: bool = False  # asked for by the user: replaces a round in progress


@dataclass
class RunOpened(Message):
    """Sampling-only mode: a saved run directory is open."""

    sampler: Any
    config: Any  # TrainConfig
    metrics: list
    corpus: Any  # Corpus or None when the training text is not available
    corpus_meta: dict
    device: str
    parameters: int
    generation: int


@dataclass
class EngineFailed(Message):
    """The worker stopped on an error; `message` is one sentence for the user."""

    message: str
    generation: int
    title: str = "Training stopped"


@dataclass
class WorkerDone(Message):
    """The training (or run-opening) worker has returned."""

    generation: int
    finished: Any = None  # events.TrainingFinished or None
