"""The Keras callback of a training run: per batch, events, metrics rows, the learning
rate, stop/pause/budget checks and mid-epoch checkpoints.

It knows the trainer only through RunControl, a small public interface, so what a batch
end may do to a run is written down in one place.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from typing import Protocol

import numpy as np

from engine import events
from engine.config import TrainConfig
from engine.run import patience, schedule
from engine.run.clock import TrainingClock
from engine.tfsetup import keras

PROGRESS_INTERVAL = 0.1  # seconds between BatchProgress events (UIs coalesce anyway)
SCHEDULE_EVERY = 4       # steps between learning-rate updates (a variable assignment each)


class Switches:
    """Stop and pause: set from any thread, honoured by the callback between batches."""

    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self._running = threading.Event()
        self._running.set()  # set = not paused

    def stop(self) -> None:
        self.stop_event.set()
        self._running.set()  # a paused run must wake up to stop

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def wait_while_paused(self, clock: TrainingClock) -> None:
        """Hold the training thread while paused, the clock stopped."""
        if self._running.is_set():
            return
        clock.pause()
        self._running.wait()
        clock.resume()


class RunControl(Protocol):
    """What the callback may ask of the run it trains (engine.run.training.Trainer)."""

    config: TrainConfig
    steps_per_epoch: int

    @property
    def stopping(self) -> bool: ...

    def wait_while_paused(self, clock: TrainingClock) -> None: ...

    def report(self, event: events.Event) -> None: ...

    def log_metrics(self, *, kind: str, epoch: int, step: int, clock: TrainingClock,
                    train_loss: float | None, val_loss: float | None = None, **more) -> None: ...

    def checkpoint(self, model, step: int, clock: TrainingClock, epoch: int) -> bool: ...


def progress_callback(control: RunControl, clock: TrainingClock, step: int, new_peak: bool = False):
    """A ProgressMixin that is also a keras Callback (Keras is imported late, so the
    concrete class is made on first use). `new_peak`: a resumed session given another
    --lr follows the plan to that peak; any other resumed session never raises the rate."""
    return _progress_class()(control, clock, step, new_peak)


@functools.cache
def _progress_class():
    return type("ProgressCallback", (ProgressMixin, keras().callbacks.Callback), {})


class ProgressMixin:
    """Per batch: events, metrics rows, stop/pause/budget checks, mid-epoch checkpoints."""

    def __init__(self, control: RunControl, clock: TrainingClock, step: int, new_peak: bool = False):
        super().__init__()
        self.control = control
        self.new_peak = new_peak
        self.resumed: schedule.Resumed | None = None  # the checkpoint's rate, read once
        self.rate_set: float | None = None  # the last rate set on the optimizer
        self.clock = clock
        self.step = step
        self.run_start_step = step
        self.run_start_time = clock.elapsed
        self.stop_reason: str | None = None
        self.failure: str | None = None
        self.targets_per_batch = control.config.batch_size * control.config.targets_per_window
        self.last_checkpoint = time.monotonic()

    def _schedule_learning_rate(self) -> None:
        """Set the learning rate for the next step (engine/run/schedule.py): the one place the
        schedule is applied to the optimizer."""
        config = self.control.config
        if config.schedule == "constant":
            return
        fraction = schedule.fraction_done(
            config, step=self.step, steps_per_epoch=self.control.steps_per_epoch,
            session_steps=self.step - self.run_start_step,
            session_seconds=self.clock.elapsed - self.run_start_time)
        optimizer = self.model.optimizer
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        if self.resumed is None and self.run_start_step and not self.new_peak:
            # a resumed session never raises the checkpoint's rate (engine/run/schedule.py)
            self.resumed = schedule.Resumed(self.step, fraction, float(np.asarray(optimizer.learning_rate)),
                                            lag=SCHEDULE_EVERY)
        self.rate_set = schedule.learning_rate(config, self.step, fraction, self.resumed)
        optimizer.learning_rate = self.rate_set

    @property
    def late(self) -> bool:
        """Whether the rate is past its warm-up and down to patience.LATE of its peak or less:
        the end of a decay, or the low rate a resumed session found (the early stop counts
        epoch ends then: engine/run/patience.py)."""
        config = self.control.config
        return (config.schedule != "constant" and self.step >= config.warmup_steps
                and self.rate_set is not None and self.rate_set <= config.lr * patience.LATE)

    def start_epoch(self, epoch: int, first_batch: int) -> None:
        self.epoch = epoch
        self.first_batch = first_batch
        self.batches = 0
        self.loss_sum = 0.0                 # running mean * batches, as Keras reports it
        self.interval_sum = 0.0
        self.interval_batches = 0
        self.last_event = 0.0
        self.rate_mark = (self.clock.elapsed, self.step)  # training seconds: stops and pauses left out
        self.rate = 0.0

    def epoch_loss(self) -> float | None:
        return self.loss_sum / self.batches if self.batches else None

    def mean_rate(self) -> float:
        seconds = self.clock.elapsed - self.run_start_time
        return (self.step - self.run_start_step) * self.targets_per_batch / seconds if seconds > 0 else 0.0

    def on_train_begin(self, logs=None):  # each epoch's fit: the rate for its first step
        self._schedule_learning_rate()

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self.batches += 1
        running_mean = float((logs or {}).get("loss", float("nan")))
        batch_loss = running_mean * self.batches - self.loss_sum
        self.loss_sum = running_mean * self.batches
        if not math.isfinite(running_mean):
            self.failure = f"the loss became {running_mean} at step {self.step:,}"
            self.model.stop_training = True
            return
        self.interval_sum += batch_loss
        self.interval_batches += 1
        if self.step % SCHEDULE_EVERY == 0:
            self._schedule_learning_rate()
        self._measure_rate()
        self._report(running_mean)
        self.control.wait_while_paused(self.clock)  # paused: hold here, between batches
        self._stop_or_checkpoint()

    def _measure_rate(self) -> None:
        trained = self.clock.elapsed  # the rate is per training second: stops and pauses left out
        if trained - self.rate_mark[0] >= 1.0:
            seconds = trained - self.rate_mark[0]
            self.rate = (self.step - self.rate_mark[1]) * self.targets_per_batch / seconds
            self.rate_mark = (trained, self.step)
        elif not self.rate:
            seconds = trained - self.rate_mark[0]
            self.rate = (self.step - self.rate_mark[1]) * self.targets_per_batch / seconds if seconds else 0.0

    def _report(self, running_mean: float) -> None:
        """A metrics row every log_every steps, a BatchProgress event every PROGRESS_INTERVAL."""
        control, now = self.control, time.monotonic()
        if self.step % control.config.log_every == 0:
            control.log_metrics(kind="interval", epoch=self.epoch, step=self.step, clock=self.clock,
                                train_loss=self.interval_sum / self.interval_batches)
            self.interval_sum, self.interval_batches = 0.0, 0
        per_epoch = control.steps_per_epoch
        if now - self.last_event >= PROGRESS_INTERVAL or self.step % per_epoch == 0:
            self.last_event = now
            control.report(events.BatchProgress(
                epoch=self.epoch, batch=self.first_batch + self.batches, batches_per_epoch=per_epoch,
                step=self.step, loss=running_mean, chars_per_sec=self.rate,
                chars_seen=self.step * self.targets_per_batch, elapsed=self.clock.elapsed))

    def _stop_or_checkpoint(self) -> None:
        control, config = self.control, self.control.config
        if control.stopping:
            self.stop_reason = "stopped"
        elif config.steps is not None and self.step - self.run_start_step >= config.steps:
            self.stop_reason = "steps"
        elif config.time_budget is not None \
                and self.clock.elapsed - self.run_start_time >= config.time_budget:
            self.stop_reason = "time_budget"
        if self.stop_reason:
            self.model.stop_training = True
        elif time.monotonic() - self.last_checkpoint >= config.checkpoint_every \
                and self.step % control.steps_per_epoch:
            self.last_checkpoint = time.monotonic()
            control.checkpoint(self.model, self.step, self.clock, self.epoch)
