"""The training pane: progress, losses, speed, the loss plot and the epoch history.

Everything here is bounded: the plot keeps at most `MAX_POINTS` points per series
(halving the resolution when full) and the history keeps the last `MAX_EPOCHS` rows,
so a session of days does not grow.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult, RenderResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual_plotext import PlotextPlot

from engine import events

LN2 = math.log(2.0)
MAX_POINTS = 600
MAX_EPOCHS = 200
PLOT_REFRESH = 0.5  # seconds between plot redraws (plotext is not free)


def bits(nats: float | None) -> float | None:
    return None if nats is None else nats / LN2


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours >= 100:
        return f"{hours}h"
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_rate(chars_per_sec: float | None) -> str:
    if not chars_per_sec:
        return "-"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if chars_per_sec >= limit:
            return f"{chars_per_sec / limit:.1f}{suffix}"
    return f"{chars_per_sec:.0f}"


def text_bar(fraction: float, width: int) -> str:
    """A bar that reads without colour (NO_COLOR): █ done, ░ to do."""
    width = max(1, width)
    fraction = min(1.0, max(0.0, fraction))
    done = int(round(fraction * width))
    return "█" * done + "░" * (width - done)


class BoundedSeries:
    """(x, y) points, at most `limit`: when full, every other point is dropped and
    only every `stride`-th new point is kept, so the series covers the whole run at a
    resolution that halves as it grows."""

    def __init__(self, limit: int = MAX_POINTS):
        self.limit = limit
        self.stride = 1
        self._seen = 0
        self.xs: list[float] = []
        self.ys: list[float] = []

    def add(self, x: float, y: float) -> None:
        self._seen += 1
        if (self._seen - 1) % self.stride:
            return
        self.xs.append(x)
        self.ys.append(y)
        if len(self.xs) >= self.limit:
            self.xs, self.ys = self.xs[::2], self.ys[::2]
            self.stride *= 2

    def clear(self) -> None:
        self.__init__(self.limit)

    def __len__(self) -> int:
        return len(self.xs)


@dataclass
class TrainingState:
    """What the pane shows; updated from engine events on the UI thread."""

    status: str = "loading TensorFlow…"
    status_kind: str = "loading"   # loading training paused stopping finished error sampling
    epoch: int = 0
    epochs: int = 0
    batch: int = 0
    batches_per_epoch: int = 0
    step: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    chars_per_sec: float = 0.0
    elapsed: float | None = None
    eta: float | None = None
    summary: str = ""              # sampling only: the saved run's settings


STATUS_MARK = {"loading": "◌", "training": "●", "paused": "‖", "stopping": "…",
               "finished": "✓", "error": "✗", "sampling": "◆"}
STATUS_STYLE = {"loading": "italic", "training": "bold green", "paused": "bold yellow",
                "stopping": "bold yellow", "finished": "bold", "error": "bold red", "sampling": "bold"}


class TrainingStats(Widget):
    """Status, progress bars, losses, speed and time, as plain text lines."""

    DEFAULT_CSS = """
    TrainingStats {
        height: 6;
        width: 1fr;
    }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.state = TrainingState()

    def render(self) -> RenderResult:
        s = self.state
        width = max(20, self.content_size.width)
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"{STATUS_MARK.get(s.status_kind, '•')} {s.status}", style=STATUS_STYLE.get(s.status_kind, ""))
        text.append("\n")
        if s.status_kind == "sampling":
            text.append(f"trained {s.epoch} epoch{'s' if s.epoch != 1 else ''} · step {s.step:,}\n")
            text.append("\n")
        else:
            epoch_fraction = ((s.epoch - 1) + (s.batch / s.batches_per_epoch if s.batches_per_epoch else 0)) / s.epochs \
                if s.epochs and s.epoch else 0.0
            counts = (f"{s.epoch}/{s.epochs}" if s.epochs else "-",
                      f"{s.batch}/{s.batches_per_epoch}" if s.batches_per_epoch else "-")
            pad = max(len(c) for c in counts)
            self._bar_line(text, "epoch", epoch_fraction, counts[0].rjust(pad), width)
            self._bar_line(text, "batch", s.batch / s.batches_per_epoch if s.batches_per_epoch else 0.0,
                           counts[1].rjust(pad), width)
        self._loss_line(text, "train   ", s.train_loss)
        self._loss_line(text, "held-out", s.val_loss)
        if s.status_kind == "sampling":
            text.append(s.summary, style="dim")
        else:
            rate = f"{format_rate(s.chars_per_sec)} chars/s"
            elapsed, eta = format_duration(s.elapsed), format_duration(s.eta)
            for times in (f"  {elapsed} elapsed  ETA {eta}", f" · {elapsed} · ETA {eta}",
                          f" · ETA {eta}"):
                if len(rate) + len(times) <= width:
                    break
            text.append(rate, style="bold")
            text.append(times, style="dim")
        # One row per line whatever the width: an error message must not push the rest down.
        lines = text.split("\n")
        for line in lines:
            line.truncate(width, overflow="ellipsis")
        return Text("\n").join(lines)

    @staticmethod
    def _bar_line(text: Text, name: str, fraction: float, counts: str, width: int) -> None:
        suffix = f" {fraction:4.0%}"
        bar_width = max(4, width - len(name) - len(counts) - 2 - len(suffix))
        text.append(f"{name} ", style="dim")
        text.append(f"{counts} ", style="bold")
        done = text_bar(fraction, bar_width)
        filled = done.count("█")
        text.append(done[:filled], style="green")
        text.append(done[filled:], style="dim")
        text.append(suffix + "\n")

    @staticmethod
    def _loss_line(text: Text, name: str, nats: float | None) -> None:
        text.append(f"{name} ", style="dim")
        if nats is None:
            text.append("-\n")
            return
        text.append(f"{nats:.3f}", style="bold")
        text.append(" nats ", style="dim")
        text.append(f"{bits(nats):.2f}", style="bold")
        text.append(" bits/char\n", style="dim")


class LossPlot(PlotextPlot):
    """Train loss over steps (a line) with the held-out loss after each epoch (points)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.train = BoundedSeries()
        self.heldout = BoundedSeries(limit=MAX_EPOCHS)
        self._dirty = True

    def on_mount(self) -> None:
        super().on_mount()
        self.set_interval(PLOT_REFRESH, self._redraw_if_dirty)
        self._redraw()

    def clear(self) -> None:
        self.train.clear()
        self.heldout.clear()
        self._dirty = True

    def add_train(self, step: int, loss: float) -> None:
        if math.isfinite(loss):
            self.train.add(step, loss)
            self._dirty = True

    def add_heldout(self, step: int, loss: float | None) -> None:
        if loss is not None and math.isfinite(loss):
            self.heldout.add(step, loss)
            self._dirty = True

    def render(self) -> RenderResult:
        if not self.train.xs and not self.heldout.xs:
            return Text("the loss is plotted here from the first steps", style="dim italic")
        return super().render()

    def _redraw_if_dirty(self) -> None:
        if self._dirty:
            self._redraw()

    def _redraw(self) -> None:
        self._dirty = False
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.xlabel("step")
        if self.train.xs:
            plt.plot(self.train.xs, self.train.ys, marker="braille")
        if self.heldout.xs:
            plt.scatter(self.heldout.xs, self.heldout.ys, marker="x")
        xs = self.train.xs + self.heldout.xs
        if xs:
            plt.xticks(_int_ticks(min(xs), max(xs)))
        self.refresh()


class EpochHistory(Widget):
    """The last epochs, newest at the bottom: epoch, step, train and held-out loss."""

    DEFAULT_CSS = """
    EpochHistory {
        width: 1fr;
        height: 1fr;
    }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rows: deque[tuple[int, int, float | None, float | None, bool]] = deque(maxlen=MAX_EPOCHS)

    def add(self, epoch: int, step: int, train: float | None, val: float | None, complete: bool = True) -> None:
        self.rows.append((epoch, step, train, val, complete))
        self.refresh()

    def clear(self) -> None:
        self.rows.clear()
        self.refresh()

    def render(self) -> RenderResult:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"{'epoch':>5} {'step':>7} {'train':>6} {'held':>6} {'bpc':>5}\n", style="bold dim")
        visible = max(0, self.size.height - 1)
        if not self.rows:
            text.append("no epoch finished yet", style="dim italic")
        rows = list(self.rows)[-visible:] if visible else []
        for i, (epoch, step, train, val, complete) in enumerate(rows):
            mark = "" if complete else "*"
            line = (f"{str(epoch) + mark:>5} {step:>7,} {_f(train):>6} {_f(val):>6} "
                    f"{_f(bits(val), 2):>5}")
            text.append(line + ("\n" if i < len(rows) - 1 else ""))
        return text


def _int_ticks(low: float, high: float, count: int = 5) -> list[int]:
    """Up to `count` distinct whole steps from low to high (plotext would print 32.5)."""
    if high <= low:
        return [int(low)]
    return sorted({int(round(low + (high - low) * i / (count - 1))) for i in range(count)})


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


class TrainingPane(Vertical):
    """Stats | loss plot | epoch history (the history hides on narrow screens)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._rate_marks: deque[tuple[float, int]] = deque(maxlen=30)
        self._total_steps: int | None = None
        self._run_start: tuple[float, int] | None = None  # (elapsed, step) when this run began
        self._time_budget: float | None = None
        self._step_budget: int | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="training-row"):
            yield TrainingStats(id="stats")
            yield LossPlot(id="loss-plot")
            yield EpochHistory(id="history")

    def on_mount(self) -> None:
        self.query_one("#loss-plot").border_title = "loss, nats/char: ⠉ train  x held-out"
        self.query_one("#history").border_title = "epochs"

    @property
    def stats(self) -> TrainingStats:
        return self.query_one(TrainingStats)

    @property
    def state(self) -> TrainingState:
        return self.stats.state

    def set_status(self, text: str, kind: str) -> None:
        self.state.status = text
        self.state.status_kind = kind
        self.stats.refresh()

    def reset(self) -> None:
        """Forget everything shown (a new run begins)."""
        status, kind = self.state.status, self.state.status_kind
        self.stats.state = TrainingState(status=status, status_kind=kind)
        self._rate_marks.clear()
        self._run_start = None
        self.query_one(LossPlot).clear()
        self.query_one(EpochHistory).clear()
        self.stats.refresh()

    def load_history(self, rows: list[dict], steps_per_epoch: int | None = None) -> None:
        """Fill the plot and the history from metrics.jsonl rows (a resumed or saved run)."""
        plot, history = self.query_one(LossPlot), self.query_one(EpochHistory)
        for row in rows:
            step = row.get("step")
            if not isinstance(step, int):
                continue
            train, val = _number(row.get("train_loss")), _number(row.get("val_loss"))
            if row.get("kind") == "interval" and train is not None:
                plot.add_train(step, train)
            elif row.get("kind") == "epoch":
                plot.add_heldout(step, val)
                complete = bool(steps_per_epoch) and step % steps_per_epoch == 0 if steps_per_epoch else True
                history.add(int(row.get("epoch", 0)), step, train, val, complete)
                self.state.epoch = int(row.get("epoch", 0))
                self.state.train_loss = train
                self.state.val_loss = val
            self.state.step = max(self.state.step, step)
        self.stats.refresh()

    # -- engine events ---------------------------------------------------------------------
    def training_started(self, event: events.TrainingStarted, config) -> None:
        s = self.state
        s.epoch = event.epoch
        s.epochs = config.epochs
        s.batches_per_epoch = event.steps_per_epoch
        s.step = event.resumed_from_step
        s.batch = event.resumed_from_step - (event.epoch - 1) * event.steps_per_epoch
        self._total_steps = config.epochs * event.steps_per_epoch
        self._time_budget = config.time_budget
        self._step_budget = config.steps
        self._run_start = None
        self._rate_marks.clear()
        self.stats.refresh()

    def batch_progress(self, event: events.BatchProgress) -> None:
        s = self.state
        s.epoch, s.batch, s.batches_per_epoch = event.epoch, event.batch, event.batches_per_epoch
        s.step, s.train_loss = event.step, event.loss
        s.chars_per_sec, s.elapsed = event.chars_per_sec, event.elapsed
        if self._run_start is None:
            self._run_start = (event.elapsed, event.step)
        self._rate_marks.append((event.elapsed, event.step))
        s.eta = self._eta(event)
        self.query_one(LossPlot).add_train(event.step, event.loss)
        self.stats.refresh()

    def _eta(self, event: events.BatchProgress) -> float | None:
        if len(self._rate_marks) < 2:
            return None
        (t0, s0), (t1, s1) = self._rate_marks[0], self._rate_marks[-1]
        if t1 <= t0 or s1 <= s0:
            return None
        rate = (s1 - s0) / (t1 - t0)
        remaining = []
        if self._total_steps is not None:
            remaining.append((self._total_steps - event.step) / rate)
        if self._step_budget is not None and self._run_start is not None:
            remaining.append((self._run_start[1] + self._step_budget - event.step) / rate)
        if self._time_budget is not None and self._run_start is not None:
            remaining.append(self._run_start[0] + self._time_budget - event.elapsed)
        return max(0.0, min(remaining)) if remaining else None

    def epoch_end(self, event: events.EpochEnd) -> None:
        s = self.state
        s.train_loss = event.train_loss if event.train_loss is not None else s.train_loss
        s.val_loss = event.val_loss
        s.elapsed = event.elapsed
        s.step = event.step
        self.query_one(LossPlot).add_heldout(event.step, event.val_loss)
        self.query_one(EpochHistory).add(event.epoch, event.step, event.train_loss, event.val_loss,
                                         event.complete)
        self.stats.refresh()

    def finished(self, event: events.TrainingFinished) -> None:
        s = self.state
        s.step = event.step
        s.elapsed = event.elapsed
        s.eta = 0.0 if event.reason != "stopped" else None
        if event.reason != "stopped" and s.batches_per_epoch:
            s.batch = s.batches_per_epoch
        self.stats.refresh()


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
