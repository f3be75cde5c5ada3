"""The generation pane: one column per temperature, streaming side by side.

A round is a generator from `Sampler.stream` (one step gives one char per
temperature); a timer pulls a few steps per tick, so text appears at a readable pace
whatever the model's speed, and on the UI thread (a step costs tens of microseconds).
The columns lay out in a grid: as many side by side as fit `MIN_COLUMN_WIDTH`, the rest
on further rows, scrolling when they do not fit the height.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.segment import Segment
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical
from textual.geometry import Region
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static

from tui.visible import visible, visible_line

TICK = 1 / 10           # seconds between pulls (each one repaints the columns)
STEPS_PER_TICK = 7      # -> ~70 chars/s per column
MIN_COLUMN_WIDTH = 28
MIN_ROW_HEIGHT = 5
MAX_CHARS = 20_000      # per column: older text is dropped beyond this

# Probability the model gave the sampled char -> style. Low-probability chars are also
# underlined so the colouring still says something under NO_COLOR.
PROB_STYLES = ((0.6, "green"), (0.3, "yellow"), (0.1, "dark_orange"), (0.02, "red underline"),
               (-1.0, "bold red underline"))
SEED_STYLE = "dim italic"


def format_temperature(t: float) -> str:
    """0.2 -> "0.2", 1 -> "1.0", 0.25 -> "0.25"."""
    text = f"{t:g}"
    return text if "." in text or "e" in text else f"{text}.0"


def prob_style(probability: float) -> str:
    for threshold, style in PROB_STYLES:
        if probability >= threshold:
            return style
    return PROB_STYLES[-1][1]


def prob_legend() -> Text:
    """What the colours mean, saying that colouring is on (k turns it off)."""
    legend = Text("colour on: p", style="dim")
    for label, probability in (("≥.6", 0.7), ("≥.3", 0.4), ("≥.1", 0.2), ("≥.02", 0.05), ("<.02", 0.0)):
        legend.append(" ")
        legend.append(label, style=prob_style(probability))
    return legend


# A word and the spaces after it: what the wrap keeps together on a line.
WORD = re.compile(r"\s*\S+\s*")


def line_breaks(paragraph: str, width: int) -> list[int]:
    """Where to break a paragraph (no newlines) into lines of at most `width` cells.

    Greedy word wrap, as rich's `Text.wrap`: a word stays on the line if it fits there
    without the spaces after it (they may run past the edge: `trim_end` drops them when
    the line is drawn), else it starts the next line. A word longer than a whole line
    starts a new line and is cut every `width` cells, its spaces staying on its last
    piece (rich may put them on a line of their own, where the next word would follow a
    blank). So a break depends only on the text before it and its own word: wrapping
    the text after any break gives the same lines, which lets the column wrap streamed
    text a piece at a time.
    """
    breaks: list[int] = []
    used = 0  # cells taken on the current line
    for word in WORD.finditer(paragraph):
        start, text = word.start(), word.group()
        letters = text.rstrip()
        if cell_len(letters) <= width - used:
            used += cell_len(text)
            continue
        if start:  # the first word of a paragraph is already at the start of a line
            breaks.append(start)
        pieces = _fold(letters, width)
        for piece in pieces[:-1]:
            start += len(piece)
            breaks.append(start)
        used = cell_len(pieces[-1] + text[len(letters):])
    return breaks


def _fold(word: str, width: int) -> list[str]:
    """`word` cut into pieces of at most `width` cells (a piece holds at least one char)."""
    pieces, piece, used = [], "", 0
    for ch in word:
        size = cell_len(ch)
        if piece and used + size > width:
            pieces.append(piece)
            piece, used = "", 0
        piece += ch
        used += size
    pieces.append(piece)
    return pieces


def trim_end(line: Text, width: int) -> Text:
    """`line` without the trailing spaces that run past `width` cells."""
    excess = line.cell_len - width
    spaces = len(line.plain) - len(line.plain.rstrip())
    if excess > 0 and spaces:
        line.right_crop(min(excess, spaces))
    return line


def _shown(ch: str) -> str:
    """How a generated character is drawn: a control character would command the
    terminal (tui/visible.py); a tab is a space, so the column's own wrap stays true."""
    return visible(ch, tab=" ")


def one_line(text: str) -> str:
    """`text` (a seed, say char-rnn's "ROMEO:\\n") drawn on one line: ⏎ for a newline,
    and no control character that would move the cursor."""
    return visible_line(text)


class SampleColumn(Widget, can_focus=True):
    """The seed (dim, italic) and the text generated from it at one temperature.

    Drawn through the line API with its own word wrap, kept incrementally: streamed
    text only ever changes the last wrapped line, so earlier lines are wrapped and
    rendered once and cached (a scrolling container of growing text would make Textual
    lay out the whole screen at every tick). The column shows the last lines that fit,
    following the text as it grows, and scrolls back itself: ↑ ↓ PgUp PgDn Home End
    when focused, or the mouse wheel.
    """

    BINDINGS = [
        Binding("up", "scroll_lines(1)", "Back", show=False),
        Binding("down", "scroll_lines(-1)", "Forward", show=False),
        Binding("pageup", "scroll_page(1)", "Page back", show=False),
        Binding("pagedown", "scroll_page(-1)", "Page forward", show=False),
        Binding("home", "scroll_lines(1000000)", "Start", show=False),
        Binding("end", "follow", "End", show=False),
    ]

    def __init__(self, temperature: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.temperature = temperature
        self.seed = ""
        self.chars: list[str] = []
        self.probs: list[float] = []
        self.length = 0
        self.colour = False
        self.done = False
        self.back = 0  # lines scrolled back from the end; 0 follows the text as it grows
        self.note = ""  # after the temperature in the title
        self._text = Text()
        self._reset_wrap()
        self._update_title()

    @property
    def generated(self) -> str:
        return "".join(self.chars)

    @property
    def plain(self) -> str:
        return self.seed + self.generated

    @property
    def styled_text(self) -> Text:
        """The seed and the generated text as drawn, with their styles (a copy)."""
        return self._text.copy()

    def start(self, seed: str, length: int, colour: bool) -> None:
        self.seed, self.length, self.colour = seed, length, colour
        self.chars, self.probs = [], []
        self.done = False
        self.back = 0
        self.note = ""
        self._rebuild()

    def set_colour(self, colour: bool) -> None:
        if colour != self.colour:
            self.colour = colour
            self._rebuild()

    def append(self, chars: Sequence[str], probs: Sequence[float]) -> None:
        self.chars.extend(chars)
        self.probs.extend(probs)
        if len(self.chars) > MAX_CHARS:
            del self.chars[: MAX_CHARS // 2], self.probs[: MAX_CHARS // 2]
            self.seed = ""
            self._rebuild()
            return
        width, height = self.content_size
        if width <= 0 or height <= 0:
            self._append_text(chars, probs)
            self.refresh()
            return
        # Repaint only the rows that can change: from the growing last line down, unless
        # the window has to move (then every row shifts up).
        first_before = self._first_visible(len(self.lines(width)), height)
        changing = len(self._stable)
        self._append_text(chars, probs)
        first_after = self._first_visible(len(self.lines(width)), height)
        top = changing - first_before
        if first_after == first_before and 0 <= top < height:
            self.refresh(Region(0, top, width, height - top))
        elif first_after != first_before:
            self.refresh()

    def _append_text(self, chars: Sequence[str], probs: Sequence[float]) -> None:
        for ch, p in zip(chars, probs):
            self._text.append(_shown(ch), style=prob_style(p) if self.colour else None)
        self._wrap_dirty = True

    def _first_visible(self, total: int, height: int) -> int:
        """The index of the top visible line (the last `height` lines, `back` lines up)."""
        return max(0, total - min(self.back, max(0, total - height)) - height)

    def finish(self) -> None:
        self.done = True

    def _rebuild(self) -> None:
        seed = "".join(_shown(ch) for ch in self.seed)
        self._text = Text.assemble((seed, SEED_STYLE))  # the seed only
        for ch, p in zip(self.chars, self.probs):
            self._text.append(_shown(ch), style=prob_style(p) if self.colour else None)
        self._reset_wrap()
        self._update_title()
        self.refresh()

    def set_note(self, note: str) -> None:
        """A few words after the temperature in the title (the memorization check)."""
        self.note = note
        self._update_title()

    def _update_title(self) -> None:
        title = "T 0 (greedy)" if self.temperature == 0 else f"T {format_temperature(self.temperature)}"
        if getattr(self, "note", ""):
            title += f" · {self.note}"
        self.border_title = f"{title} ↑{self.back}" if self.back else title

    # -- incremental word wrap ------------------------------------------------------------
    def _reset_wrap(self, width: int = 0) -> None:
        self._wrap_width = width
        self._stable: list[Text] = []      # wrapped lines that can no longer change
        self._tail_start = 0               # where the last (still growing) line begins
        self._tail = Text()
        self._strips: dict[int, Strip] = {}  # rendered stable lines
        self._wrap_dirty = True

    def lines(self, width: int) -> list[Text]:
        """The text wrapped to `width` (see `line_breaks`)."""
        width = max(1, width)
        if width != self._wrap_width:
            self._reset_wrap(width)
        if self._wrap_dirty:
            self._wrap_dirty = False
            tail = self._text[self._tail_start:]
            spans: list[tuple[int, int]] = []
            position = 0
            for paragraph in tail.plain.split("\n"):
                breaks = line_breaks(paragraph, width)
                spans.extend((position + a, position + b)
                             for a, b in zip([0, *breaks], [*breaks, len(paragraph)]))
                position += len(paragraph) + 1
            self._stable.extend(trim_end(tail[a:b], width) for a, b in spans[:-1])
            a, b = spans[-1]
            self._tail_start += a
            self._tail = trim_end(tail[a:b], width)
        return [*self._stable, self._tail] if (self._stable or self._tail) else []

    # -- drawing --------------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        width, height = self.content_size
        style = self.visual_style.rich_style
        lines = self.lines(width)
        self.back = min(self.back, max(0, len(lines) - height))
        index = self._first_visible(len(lines), height) + y
        if index >= len(lines) or y >= height:
            return Strip.blank(width, style)
        if index < len(self._stable) and index in self._strips:
            return self._strips[index]
        line = lines[index].copy()
        line.stylize_before(style)
        segments = [segment if segment.style is not None else Segment(segment.text, style)
                    for segment in line.render(self.app.console, end="")]
        strip = Strip(segments, line.cell_len).crop_extend(0, width, style)
        if index < len(self._stable):
            self._strips[index] = strip
        return strip

    # -- scrolling back -------------------------------------------------------------------
    def _scroll(self, lines: int) -> None:
        width, height = self.content_size
        total = len(self.lines(width))
        self.back = max(0, min(self.back + lines, total - max(1, height)))
        self._update_title()
        self.refresh()

    def action_scroll_lines(self, lines: int) -> None:
        self._scroll(lines)

    def action_scroll_page(self, pages: int) -> None:
        self._scroll(pages * max(1, self.content_size.height - 1))

    def action_follow(self) -> None:
        self._scroll(-self.back)

    def on_mouse_scroll_up(self, event) -> None:
        event.stop()
        self._scroll(2)

    def on_mouse_scroll_down(self, event) -> None:
        event.stop()
        self._scroll(-2)


@dataclass
class Round:
    """One generation round: what it started from and how far it has got."""

    number: int
    seed: str
    temperatures: tuple[float, ...]
    length: int
    label: str
    stream: Iterator | None
    done: bool = False
    sampler: object = None  # issue 19: what the round was drawn with, for the inspector
    distributions: list | None = None  # each step's T=1 distributions (rows x vocab), from the stream


class GenerationPane(Vertical):
    """Info line + the grid of temperature columns."""

    class RoundFailed(Message):
        """The sampler refused the round (for example a seed char outside the vocabulary)."""

        def __init__(self, error: str) -> None:
            super().__init__()
            self.error = error

    class RoundFinished(Message):
        def __init__(self, number: int) -> None:
            super().__init__()
            self.number = number

    def __init__(self, temperatures: Sequence[float], **kwargs) -> None:
        super().__init__(**kwargs)
        self.temperatures = tuple(temperatures)
        self.colour = False
        self.round: Round | None = None
        self._rounds = 0
        self._timer = None
        self._placeholder = "waiting for the model…"

    def compose(self) -> ComposeResult:
        yield Static("", id="gen-info")
        with Grid(id="columns"):  # scrolls itself when the rows do not fit (overflow-y)
            for t in self.temperatures:
                yield SampleColumn(t)

    def on_mount(self) -> None:
        self._timer = self.set_interval(TICK, self._tick, pause=True)
        self._show_info()
        self._layout_columns()

    def on_resize(self) -> None:
        self._layout_columns()

    @property
    def columns(self) -> list[SampleColumn]:
        return list(self.query(SampleColumn))

    @property
    def streaming(self) -> bool:
        return self.round is not None and not self.round.done

    def set_placeholder(self, text: str) -> None:
        self._placeholder = text
        self._show_info()

    def _layout_columns(self) -> None:
        """As many columns per row as fit; rows share the height, scrolling below a minimum."""
        grid = self.query_one("#columns", Grid)
        count = max(1, len(self.temperatures))
        # Before the first layout there is no size yet: estimate from the terminal's.
        width = grid.content_size.width or self.app.size.width
        height = grid.content_size.height or max(0, self.app.size.height - 12)
        per_row = max(1, min(count, width // MIN_COLUMN_WIDTH))
        rows = math.ceil(count / per_row)
        per_row = math.ceil(count / rows)  # balance: 2+2, not 3+1
        row_height = max(MIN_ROW_HEIGHT, height // rows)
        grid.styles.grid_size_columns = per_row
        grid.styles.grid_size_rows = rows
        grid.styles.grid_rows = " ".join([str(row_height)] * rows)

    async def set_temperatures(self, temperatures: Sequence[float]) -> None:
        """Replace the columns (the round in progress is abandoned)."""
        self.temperatures = tuple(temperatures)
        self.stop_round()
        grid = self.query_one("#columns", Grid)
        # A removed column must not keep the focus (its screen would send it every key).
        screen = self.screen
        had_focus = isinstance(screen.focused, SampleColumn)
        if had_focus:
            screen.set_focus(None)
        await grid.remove_children()
        await grid.mount_all([SampleColumn(t) for t in self.temperatures])
        if had_focus:
            screen.set_focus(self.columns[0])
        self._layout_columns()
        for column in self.columns:
            column.set_colour(self.colour)

    def set_colour(self, colour: bool) -> None:
        self.colour = colour
        for column in self.columns:
            column.set_colour(colour)
        self._show_info()

    def start_round(self, stream: Iterator, seed: str, length: int, label: str) -> None:
        """Show `seed` in every column and start pulling steps from `stream`."""
        self._rounds += 1
        self.round = Round(self._rounds, seed, self.temperatures, length, label, stream)
        for column in self.columns:
            column.start(seed, length, self.colour)
        self._show_info()
        if self._timer is not None:
            self._timer.resume()

    def stop_round(self) -> None:
        if self.round is not None and not self.round.done:
            self.round.done = True
            self.round.stream = None
            for column in self.columns:
                column.finish()
        if self._timer is not None:
            self._timer.pause()

    def _tick(self) -> None:
        current = self.round
        if current is None or current.done or current.stream is None:
            if self._timer is not None:
                self._timer.pause()
            return
        columns = self.columns
        pulled: list[list[str]] = [[] for _ in columns]
        pulled_probs: list[list[float]] = [[] for _ in columns]
        finished = False
        try:
            for _ in range(STEPS_PER_TICK):
                chars, probs = next(current.stream)
                for i in range(min(len(columns), len(chars))):
                    pulled[i].append(chars[i])
                    pulled_probs[i].append(probs[i])
        except StopIteration:
            finished = True
        except ValueError as error:  # the sampler refused the seed text
            current.done, current.stream = True, None
            self._timer.pause()
            self.post_message(self.RoundFailed(str(error)))
            return
        for column, chars, probs in zip(columns, pulled, pulled_probs):
            if chars:
                column.append(chars, probs)
        if finished:
            current.done, current.stream = True, None
            for column in columns:
                column.finish()
            self._timer.pause()
            self.post_message(self.RoundFinished(current.number))

    def _show_info(self) -> None:
        info = Text(no_wrap=True, overflow="ellipsis")
        if self.round is None:
            info.append(self._placeholder, style="italic dim")
        else:
            info.append(f"round {self.round.number}", style="bold")
            if self.round.label:
                info.append(f" · {self.round.label}")
            if self.colour:  # before the seed, which is cut to the width
                info.append(" · ")
                info.append_text(prob_legend())
            info.append(" · seed ")
            info.append(one_line(self.round.seed), style=SEED_STYLE)
        self.query_one("#gen-info", Static).update(info)

    def export_text(self) -> str:
        """The current samples as plain text, one section per temperature."""
        parts = []
        current = self.round
        if current is not None:
            parts.append(f"# round {current.number}: {current.label}\n# seed: {current.seed!r}\n")
        for column in self.columns:
            title = format_temperature(column.temperature) + (" (greedy)" if column.temperature == 0 else "")
            parts.append(f"\n--- temperature {title}\n{column.plain}\n")
        return "".join(parts)
