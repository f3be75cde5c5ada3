"""Plain progress events: what the engine tells the front ends.

A run in this process (engine.run.session.RunSession) calls its `on_event(event)` on the
training thread, so a subscriber must be quick and thread-safe (post a message, put on
a queue, print). A run followed from another process (engine.run.follow) produces the same
events from its metrics.jsonl. engine.progress turns either stream into what a front
end shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Preparing:
    """What the session is doing before training starts (loading the corpus, TensorFlow...)."""
    text: str
    fraction: float | None = None   # of the corpus read, while reading it
    total_bytes: int = 0            # ... out of this many (both passes over the file)


@dataclass(frozen=True)
class CorpusReady:
    """The corpus is loaded: a front end can show it before TensorFlow is up."""
    name: str
    source: str
    chars: int
    vocab_size: int
    run_dir: str


@dataclass(frozen=True)
class TrainingStarted:
    corpus_name: str
    corpus_chars: int
    vocab_size: int
    windows_total: int        # windows over the whole text, as the book counts them
    windows_train: int        # windows in the training split
    parameters: int
    model_summary: str
    device: str               # "CPU" or the GPU's name
    run_dir: str
    resumed_from_step: int    # 0 for a fresh run
    epoch: int                # the epoch training starts in (1-based)
    steps_per_epoch: int
    worker: str = ""          # multi-worker runs: "chief, one of 2 workers", "worker 1, one of 2 workers"
    epochs: int = 0           # the run ends after this many epochs
    step_budget: int | None = None     # --steps: this session stops after that many more steps
    time_budget: float | None = None   # --time-budget: ... or after that many more seconds
    elapsed: float = 0.0      # seconds of training in this run directory before this session


@dataclass(frozen=True)
class BatchProgress:
    epoch: int                # 1-based
    batch: int                # batches done in this epoch
    batches_per_epoch: int
    step: int                 # optimizer steps done in total
    loss: float               # running mean train loss (nats/char) since the epoch began
    chars_per_sec: float      # target characters per second, recent
    chars_seen: int           # target characters seen in total
    elapsed: float            # seconds of training in this run directory, in total


@dataclass(frozen=True)
class EpochEnd:
    epoch: int
    step: int
    train_loss: float
    val_loss: float | None
    elapsed: float
    complete: bool = True     # False when the epoch was cut short (stop, budget)


@dataclass(frozen=True)
class CheckpointSaved:
    path: str
    step: int
    epoch: int


@dataclass(frozen=True)
class SamplesGenerated:
    epoch: int
    seed_text: str
    samples: dict[float, str] = field(default_factory=dict)  # temperature -> generated text


@dataclass(frozen=True)
class Notice:
    """Something the user should know that is not an error (fallback corpus, rollback)."""
    message: str


@dataclass(frozen=True)
class StateChanged:
    """Training was paused, resumed, or asked to stop (it stops after the current batch)."""
    state: str                # "paused", "running" or "stopping"


@dataclass(frozen=True)
class TrainingFailed:
    """Training ended on an error (a refusal, or a bug); `message` is one sentence."""
    message: str


@dataclass(frozen=True)
class TrainingFinished:
    reason: str               # "epochs", "time_budget", "steps", "stopped", "no_improvement"
    epoch: int
    step: int
    train_loss: float | None
    val_loss: float | None
    elapsed: float
    chars_per_sec: float
    run_dir: str
    long_context_loss: float | None = None  # held out, 200+ chars of context (engine/modeling/longcontext.py)


Event = (Preparing | CorpusReady | TrainingStarted | BatchProgress | EpochEnd | CheckpointSaved
         | SamplesGenerated | Notice | StateChanged | TrainingFailed | TrainingFinished)
