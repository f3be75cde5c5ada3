"""Messages the worker threads post to the screen (`post_message` is thread-safe).

A run's events (engine.events), whether from the training thread of this process or
from a follower reading another process's metrics, arrive in `RunEvents`. Progress
ticks that supersede each other implement `can_replace`, so a burst of them queued
while the UI was busy is coalesced into the newest one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message


@dataclass
class RunEvents(Message):
    """Events of the run the screen shows, in order."""

    events: tuple
    generation: int    # which run posted them: events of a replaced run are dropped
    tick: bool = False  # a lone progress tick, which the next one may replace

    def can_replace(self, message: Message) -> bool:
        return (self.tick and isinstance(message, RunEvents) and message.tick
                and message.generation == self.generation)


@dataclass
class SamplerReady(Message):
    """A sampler with a copy of the current weights, for a new generation round."""

    sampler: Any  # engine.modeling.sampler.Sampler
    generation: int
    reason: str = ""
    now: bool = False  # asked for by the user: replaces a round in progress


@dataclass
class SeedCorpusReady(Message):
    """The training text of a saved or followed run, for random seed texts."""

    corpus: Any  # engine.data.corpus.Corpus
    generation: int


@dataclass
class SamplesMeasured(Message):
    """The memorization check of a finished round: one short note per column."""

    round_number: int
    notes: tuple
    generation: int


@dataclass
class StopRequested(Message):
    """A signal came, or the terminal went away (posted by tui.lifeline's thread): the
    run is stopping; show it and shut down."""

    signum: int
