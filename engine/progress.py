"""Where a run stands: one pure reducer from engine events to what every front end shows.

The headless bar, the app's training pane and `watch` all fold the same events
(engine.events, live or made from metrics.jsonl rows) through `reduce`, so they agree
on the epoch and batch, the rate, the ETA and the state.

* Epoch and batch always follow from `step` and `batches_per_epoch`, never from the
  events' own epoch/batch fields: BatchProgress is throttled, so the last batches
  before a stop may have no event of their own, while EpochEnd, CheckpointSaved and
  TrainingFinished carry the true step. A step on an epoch boundary shows the epoch
  just finished as complete, except at TrainingStarted, where the next one begins.
* The rate is measured here, from (elapsed, step) pairs, as an exponential moving
  average over about RATE_WINDOW seconds of training: the evaluation after each epoch
  slows it a little instead of making it swing, and events made from metrics rows
  (whose chars_per_sec is unknown) work the same.
* The ETA is the time until the first of the run's limits: the last epoch, --steps and
  --time-budget (both counted from the start of this session).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace

from engine import events

RATE_WINDOW = 30.0  # seconds of training the rate averages over (the moving average's time constant)
ENDED = ("stopped", "finished", "failed")


@dataclass(frozen=True)
class Progress:
    """What every front end shows; make a new one with `reduce`, never by hand."""

    state: str = "starting"            # starting running paused stopping stopped finished failed
    finish_reason: str | None = None   # TrainingFinished.reason
    epoch: int = 0                     # 1-based; on a boundary, the epoch just finished
                                       # (then batch == batches_per_epoch)
    epochs: int = 0                    # the run ends after this many epochs (0: unknown)
    batch: int = 0                     # batches done in `epoch`
    batches_per_epoch: int = 0
    step: int = 0                      # optimizer steps done in total
    train_loss: float | None = None
    val_loss: float | None = None
    chars_seen: int = 0
    chars_per_sec: float = 0.0         # smoothed
    elapsed: float = 0.0               # seconds of training in the run, in total
    eta: float | None = None           # seconds until the first of: the last epoch, --steps, --time-budget

    # Bookkeeping for the ETA and the rate.
    step_budget: int | None = field(default=None, repr=False)     # --steps, counted from session_start_step
    time_budget: float | None = field(default=None, repr=False)   # --time-budget, from session_start_elapsed
    session_start_step: int = field(default=0, repr=False)
    session_start_elapsed: float = field(default=0.0, repr=False)
    steps_per_sec: float = field(default=0.0, repr=False)         # smoothed; 0 until measured
    chars_per_step: float = field(default=0.0, repr=False)        # 0 while the events carry no characters
    rate_mark: tuple[float, int] | None = field(default=None, repr=False)  # (elapsed, step) last measured
    rate_seconds: float = field(default=0.0, repr=False)          # training time measured this session


def reduce(progress: Progress, event) -> Progress:
    """The progress after `event`; events that do not change it return `progress` itself."""
    handler = _HANDLERS.get(type(event))
    if handler is None:
        return progress
    changed = handler(progress, event)
    return changed if changed is progress else replace(changed, eta=_eta(changed))


def replay(stream, progress: Progress = Progress()) -> Progress:
    """The progress after every event of `stream`, in order."""
    return functools.reduce(reduce, stream, progress)


# -- the events --------------------------------------------------------------------------------
def _started(progress: Progress, event: events.TrainingStarted) -> Progress:
    """A new session: forget its predecessor's rate and budgets; a resumed run keeps its losses."""
    resumed = event.resumed_from_step > 0
    # Paused or asked to stop while the model was still loading: that still holds.
    state = progress.state if progress.state in ("paused", "stopping") else "running"
    epoch, batch = _position(event.resumed_from_step, event.steps_per_epoch, event.epoch, starting=True)
    return Progress(
        state=state, epoch=epoch, epochs=event.epochs, batch=batch,
        batches_per_epoch=event.steps_per_epoch, step=event.resumed_from_step,
        train_loss=progress.train_loss if resumed else None,
        val_loss=progress.val_loss if resumed else None,
        chars_seen=int(event.resumed_from_step * progress.chars_per_step),
        elapsed=event.elapsed, step_budget=event.step_budget, time_budget=event.time_budget,
        session_start_step=event.resumed_from_step, session_start_elapsed=event.elapsed,
        chars_per_step=progress.chars_per_step)


def _batch(progress: Progress, event: events.BatchProgress) -> Progress:
    chars_per_step = progress.chars_per_step
    if event.chars_seen > 0 and event.step > 0:
        chars_per_step = event.chars_seen / event.step
    progress = replace(progress, train_loss=event.loss, chars_per_step=chars_per_step,
                       batches_per_epoch=event.batches_per_epoch or progress.batches_per_epoch)
    return _moved(progress, event.step, event.epoch, event.elapsed)


def _epoch_end(progress: Progress, event: events.EpochEnd) -> Progress:
    progress = replace(progress, train_loss=_or(event.train_loss, progress.train_loss),
                       val_loss=_or(event.val_loss, progress.val_loss))
    return _moved(progress, event.step, event.epoch, event.elapsed)


def _checkpoint_saved(progress: Progress, event: events.CheckpointSaved) -> Progress:
    return _moved(progress, event.step, progress.epoch, elapsed=None)


def _finished(progress: Progress, event: events.TrainingFinished) -> Progress:
    progress = replace(progress, state="stopped" if event.reason == "stopped" else "finished",
                       finish_reason=event.reason,
                       train_loss=_or(event.train_loss, progress.train_loss),
                       val_loss=_or(event.val_loss, progress.val_loss))
    return _moved(progress, event.step, progress.epoch, event.elapsed)


def _state_changed(progress: Progress, event: events.StateChanged) -> Progress:
    if progress.state in ENDED or event.state not in ("paused", "running", "stopping"):
        return progress  # a late request cannot bring an ended run back
    return replace(progress, state=event.state)


def _failed(progress: Progress, event: events.TrainingFailed) -> Progress:
    return replace(progress, state="failed")


_HANDLERS = {
    events.TrainingStarted: _started,
    events.BatchProgress: _batch,
    events.EpochEnd: _epoch_end,
    events.CheckpointSaved: _checkpoint_saved,
    events.TrainingFinished: _finished,
    events.StateChanged: _state_changed,
    events.TrainingFailed: _failed,
}


# -- the maths ---------------------------------------------------------------------------------
def _moved(progress: Progress, step: int, epoch_hint: int, elapsed: float | None) -> Progress:
    """Move to `step` (never back: a late event cannot undo progress) at `elapsed`."""
    step = max(progress.step, step)
    epoch, batch = _position(step, progress.batches_per_epoch, epoch_hint, starting=False)
    progress = replace(progress, step=step, epoch=epoch, batch=batch,
                       chars_seen=max(progress.chars_seen, int(step * progress.chars_per_step)))
    if elapsed is None:
        return progress
    return _measure_rate(replace(progress, elapsed=max(progress.elapsed, elapsed)), elapsed, step)


def _position(step: int, per_epoch: int, epoch_hint: int, *, starting: bool) -> tuple[int, int]:
    """(epoch, batch) at `step`. On a boundary that is the epoch just finished, complete,
    unless training is `starting` the next one. Without the epoch's length, only the
    epoch is known (from the event)."""
    if per_epoch <= 0:
        return epoch_hint, 0
    epochs_done, batch = divmod(step, per_epoch)
    if batch == 0 and step > 0 and not starting:
        return epochs_done, per_epoch
    return epochs_done + 1, batch


def _measure_rate(progress: Progress, elapsed: float, step: int) -> Progress:
    """Fold the steps since the last mark into the moving average of steps per second.

    The first mark of a session is only a starting point: the time before it went on
    building the model. Until RATE_WINDOW seconds are measured the average is the plain
    mean since that mark (a weight of seconds/measured), so the first value is not
    dragged towards zero."""
    if progress.rate_mark is None:
        return replace(progress, rate_mark=(elapsed, step))
    seconds, steps = elapsed - progress.rate_mark[0], step - progress.rate_mark[1]
    if seconds <= 0 or steps < 0:
        return progress
    measured = progress.rate_seconds + seconds
    weight = max(1.0 - math.exp(-seconds / RATE_WINDOW), seconds / measured)
    rate = progress.steps_per_sec + weight * (steps / seconds - progress.steps_per_sec)
    return replace(progress, rate_mark=(elapsed, step), rate_seconds=measured, steps_per_sec=rate,
                   chars_per_sec=rate * progress.chars_per_step)


def _eta(progress: Progress) -> float | None:
    if progress.state == "finished":
        return 0.0
    if progress.state in ENDED or progress.steps_per_sec <= 0:
        return None
    steps_left = []
    if progress.epochs and progress.batches_per_epoch:
        steps_left.append(progress.epochs * progress.batches_per_epoch - progress.step)
    if progress.step_budget is not None:
        steps_left.append(progress.session_start_step + progress.step_budget - progress.step)
    seconds_left = [steps / progress.steps_per_sec for steps in steps_left]
    if progress.time_budget is not None:
        seconds_left.append(progress.session_start_elapsed + progress.time_budget - progress.elapsed)
    return max(0.0, min(seconds_left)) if seconds_left else None


def _or(value, fallback):
    return fallback if value is None else value


# -- words for the front ends ------------------------------------------------------------------
# Why a run ended (TrainingFinished.reason), in words for people: one table for every front end.
END_WORDS = {"stopped": "stopped on request", "time_budget": "time budget reached",
             "steps": "step limit reached", "epochs": "all epochs done",
             "no_improvement": "held-out loss stopped improving"}


def describe_end(reason: str | None) -> str:
    """"stopped on request", "time budget reached"...: why a run ended, in a few words."""
    return END_WORDS.get(reason or "", "ended")


def describe_position(progress: Progress) -> str:
    """"step 1,234 (epoch 3, 254 of 490 batches)" or "the end of epoch 3, step 1,470"."""
    per_epoch = progress.batches_per_epoch
    if not per_epoch:
        return f"step {progress.step:,}"
    if progress.batch < per_epoch:
        return f"step {progress.step:,} (epoch {progress.epoch}, {progress.batch:,} of {per_epoch:,} batches)"
    return f"the end of epoch {progress.epoch}, step {progress.step:,}"


def format_duration(seconds: float | None) -> str:
    """"4:05", "1:02:03", "123h"; "--:--" when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours >= 100:
        return f"{hours}h"
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_rate(chars_per_sec: float | None) -> str:
    """"950", "12.3k", "1.5M"; "-" when unknown."""
    if not chars_per_sec:
        return "-"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if chars_per_sec >= limit:
            return f"{chars_per_sec / limit:.1f}{suffix}"
    return f"{chars_per_sec:.0f}"
