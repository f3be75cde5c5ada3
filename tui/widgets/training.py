"""The training pane: progress, losses, speed, the loss plot and the epoch history.

Everything here is bounded: the plot keeps at most `MAX_POINTS` points per series
(halving the resolution when full) and the history keeps the last `MAX_EPOCHS` rows,
so a session of days does not grow.
"""

from __future__ import annotations

import math
from collections import deque

from rich.text import Text
from textual.app import ComposeResult, RenderResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual_plotext import PlotextPlot

from engine import events
from engine.config import is_finite_number
from engine.progress import Progress, format_duration, format_rate
from tui.visible import visible_line

LN2 = math.log(2.0)
MAX_POINTS = 600
MAX_EPOCHS = 200
PLOT_REFRESH = 1.0   # seconds between plot redraws, when it changed (plotext is not free)
STATS_REFRESH = 0.5  # seconds between redraws of the numbers, when they changed
# The plot's y range: from the lowest loss to the TOP_QUANTILE of the last RECENT_SHARE of
# the train points. The first steps' losses (ln(vocab size): 3.7 nats and more) would
# otherwise set the scale for the whole run and squeeze the learning that matters into
# the bottom rows. (A log axis would not help: losses span a factor of 2 or 3.) What is
# above the range is drawn along the top edge, whose label is marked ↑.
RECENT_SHARE = 0.8
TOP_QUANTILE = 0.98
MIN_POINTS_TO_CLIP = 10  # fewer train points: plotext's own range, the whole of them
FRAMED_FROM = 10         # rows: from there the lower and left axes are drawn (a row)
STEP_LABEL_FROM = 14     # rows: from there the x axis is labelled "step"


def bits(nats: float | None) -> float | None:
    return None if nats is None else nats / LN2


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
        self.progress = Progress()
        self.drawn: Progress | None = None   # the progress last rendered
        self.status = "loading TensorFlow…"
        self.status_kind = "loading"   # loading training paused stopping finished error sampling
        self.summary = ""              # sampling only: the saved run's settings

    def render(self) -> RenderResult:
        s = self.drawn = self.progress
        width = max(20, self.content_size.width)
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"{STATUS_MARK.get(self.status_kind, '•')} {self.status}",
                    style=STATUS_STYLE.get(self.status_kind, ""))
        text.append("\n")
        if self.status_kind == "sampling":
            done = s.step // s.batches_per_epoch if s.batches_per_epoch else s.epoch
            text.append(f"trained {done} epoch{'s' if done != 1 else ''} · step {s.step:,}\n")
            text.append("\n")
        else:
            in_epoch = s.batch / s.batches_per_epoch if s.batches_per_epoch else 0
            epoch_fraction = ((s.epoch - 1) + in_epoch) / s.epochs if s.epochs and s.epoch else 0.0
            counts = (f"{s.epoch}/{s.epochs}" if s.epochs else "-",
                      f"{s.batch}/{s.batches_per_epoch}" if s.batches_per_epoch else "-")
            pad = max(len(c) for c in counts)
            self._bar_line(text, "epoch", epoch_fraction, counts[0].rjust(pad), width)
            self._bar_line(text, "batch", s.batch / s.batches_per_epoch if s.batches_per_epoch else 0.0,
                           counts[1].rjust(pad), width)
        self._loss_line(text, "train   ", s.train_loss)
        self._loss_line(text, "held-out", s.val_loss)
        if self.status_kind == "sampling":
            text.append(self.summary, style="dim")
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

    @property
    def pending(self) -> bool:
        """Whether points were added since the plot was last drawn."""
        return self._dirty

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

    def on_resize(self) -> None:
        self._dirty = True  # the frame and the y ticks depend on the height

    def _redraw_if_dirty(self) -> None:
        if self._dirty:
            self._redraw()

    def _redraw(self) -> None:
        self._dirty = False
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        height = self.size.height
        if height >= FRAMED_FROM:
            plt.xaxes(True, False)  # the lower and left axes only: the others say nothing
            plt.yaxes(True, False)
        else:
            plt.frame(False)
        if height >= STEP_LABEL_FROM:
            plt.xlabel("step")
        y_range = loss_y_range(self.train.xs, self.train.ys, self.heldout.xs, self.heldout.ys)
        top = y_range[1] if y_range else math.inf
        if self.train.xs:
            plt.plot(self.train.xs, [min(y, top) for y in self.train.ys], marker="braille")
        if self.heldout.xs:
            plt.scatter(self.heldout.xs, [min(y, top) for y in self.heldout.ys], marker="x")
        if y_range:
            plt.ylim(*y_range)
            # One tick every other row or so: the canvas is the height less the x tick
            # labels, the lower axis and the "step" label.
            rows = height - 1 - (height >= FRAMED_FROM) - (height >= STEP_LABEL_FROM)
            plt.yticks(*_clipped_ticks(*y_range, count=max(2, min(5, rows // 2 + 1))))
        xs = self.train.xs + self.heldout.xs
        if xs:
            plt.xticks(_int_ticks(min(xs), max(xs)))
        self.refresh()


def loss_y_range(train_xs: list[float], train_ys: list[float], heldout_xs: list[float],
                 heldout_ys: list[float]) -> tuple[float, float] | None:
    """(lowest, top) for the plot's y axis, or None when nothing needs clipping: from the
    lowest loss to the TOP_QUANTILE of the last RECENT_SHARE of the train losses (and any
    held-out loss of that stretch), so the early spike does not set the scale. Sorting
    at most MAX_POINTS numbers: cheap enough for every redraw."""
    if len(train_ys) < MIN_POINTS_TO_CLIP:
        return None
    first = len(train_ys) - max(1, int(len(train_ys) * RECENT_SHARE))
    recent = sorted(train_ys[first:])
    top = recent[round(TOP_QUANTILE * (len(recent) - 1))]
    top = max([top] + [y for x, y in zip(heldout_xs, heldout_ys) if x >= train_xs[first]])
    everything = train_ys + heldout_ys
    low = min(everything)
    if top >= max(everything) or top <= low:
        return None
    return low, top


def _clipped_ticks(low: float, top: float, count: int) -> tuple[list[float], list[str]]:
    """`count` y ticks from low to top; the top one marked ↑ (losses above are cut)."""
    ticks = [low + (top - low) * i / (count - 1) for i in range(count)]
    labels = [f"{tick:.2f}" for tick in ticks]
    labels[-1] += "↑"
    return ticks, labels


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

    def add(self, epoch: int, step: int, train: float | None, val: float | None,
            complete: bool = True) -> None:
        """List an epoch; a later row of the same epoch (a stopped epoch, then resumed and
        finished: `12*`, then `12`) takes the earlier one's place."""
        if self.rows and self.rows[-1][0] == epoch:
            self.rows.pop()
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
    """Stats | loss plot | epoch history (the history hides on narrow screens): a view of
    the run's events, its numbers those of engine.progress."""

    def compose(self) -> ComposeResult:
        with Horizontal(id="training-row"):
            yield TrainingStats(id="stats")
            yield LossPlot(id="loss-plot")
            yield EpochHistory(id="history")

    @property
    def stats(self) -> TrainingStats:
        return self.query_one(TrainingStats)

    @property
    def progress(self) -> Progress:
        return self.stats.progress

    @property
    def status(self) -> str:
        return self.stats.status

    def set_status(self, text: str, kind: str) -> None:
        text = visible_line(text)  # it may quote a file name or an error about one
        stats = self.stats
        if (text, kind) != (stats.status, stats.status_kind):
            stats.status, stats.status_kind = text, kind
            stats.refresh()

    def set_summary(self, summary: str) -> None:
        self.stats.summary = summary
        self.stats.refresh()

    def on_mount(self) -> None:
        self.query_one("#loss-plot").border_title = "loss, nats/char: ⠉ train  x held-out"
        self.query_one("#history").border_title = "epochs"
        self.set_interval(STATS_REFRESH, self._refresh_numbers)

    def show(self, progress: Progress) -> None:
        """New numbers: drawn with the next tick (a person reads them at 2 Hz, not 10)."""
        self.stats.progress = progress

    @property
    def drawn(self) -> bool:
        """Whether the screen shows the newest numbers and points (they are drawn a few
        times a second, not at every event)."""
        return self.stats.drawn is self.stats.progress and not self.query_one(LossPlot).pending

    def _refresh_numbers(self) -> None:
        stats = self.stats
        if stats.progress is not stats.drawn:
            stats.refresh()

    def reset(self) -> None:
        """Forget the plot and the history (a new run begins)."""
        self.show(Progress())
        self.query_one(LossPlot).clear()
        self.query_one(EpochHistory).clear()

    def add(self, event) -> None:
        """Plot a loss, or list a finished epoch."""
        if isinstance(event, events.BatchProgress):
            self.query_one(LossPlot).add_train(event.step, event.loss)
        elif isinstance(event, events.EpochEnd):
            self.query_one(LossPlot).add_heldout(event.step, event.val_loss)
            self.query_one(EpochHistory).add(event.epoch, event.step, _number(event.train_loss),
                                             event.val_loss, event.complete)


def _number(value) -> float | None:
    return float(value) if is_finite_number(value) else None
