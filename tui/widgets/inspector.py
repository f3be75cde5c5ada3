"""The inspector: why a sample column wrote the character it wrote (issue 19, item 1).

For one character of a column, the panel shows the text before it and the model's
distribution at that step: the ten likeliest characters at T=1 and the same reweighted
at the column's temperature (the book's `reweight_distribution`), side by side as bars,
the chosen character marked with its rank and probability, and the entropy in bits.
← → move along the sample, Escape closes; `i` opens it, and so does a click on a
character of a column.

What it explains is fixed when it opens: the sampler the column's round was drawn with
(kept with the round: a checkpoint saved since must not change the answer), the
column's temperature, seed and text. The distributions are the ones the round's stream
kept as it drew each character (`Sampler.stream(distributions=...)`), so a key is answered
from memory; where the column no longer holds the round's whole text, one trace of it
(engine/modeling/trace.py) is made on a thread instead. The chosen character's
probability at T=1 is the one the colour mode colours it by: the sampler's, kept with the
column as it streamed (`Subject.probabilities`), not computed again.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import work
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import Footer

from engine.modeling.nextchar import NextChar
from engine.modeling.sampler import encode
from tui.visible import visible_line
from tui.widgets.generation import (
    SampleColumn,
    format_temperature,
    line_breaks,
    prob_style,
)

TOP = 10
BLOCKS = " ▏▎▍▌▋▊▉█"  # eighths of a cell, for bars finer than a character


@dataclass(frozen=True)
class Subject:
    """What the panel explains: a column's text as it was drawn, and how it was drawn."""

    sampler: object        # engine.modeling.sampler.Sampler: the round's, not the newest checkpoint's
    temperature: float
    seed: str
    generated: str
    probabilities: tuple[float, ...]  # P(chosen char) at T=1 per generated char: the colour mode's
    column: int            # the column's index in the generation pane
    round_number: int
    # The distribution each generated char was drawn from (T=1), kept by the stream as it
    # drew: the figures without tracing the text again. None: trace it (an older column).
    distributions: tuple | None = None

    @property
    def text(self) -> str:
        return self.seed + self.generated

    def context(self, position: int) -> str:
        """The text before generated[position]: what the model had read."""
        return self.seed + self.generated[:position]


def subject_of(pane, index: int) -> Subject | None:
    """The column `index` of the generation pane as an inspector subject (None before any
    character is generated)."""
    round_ = pane.round
    column = pane.columns[index]
    sampler = getattr(round_, "sampler", None) if round_ is not None else None
    if sampler is None or not column.chars or not (column.seed or len(column.chars) > 1):
        return None
    drawn = getattr(round_, "distributions", None)
    kept = None
    if drawn is not None and len(drawn) == len(column.chars):  # (not when older text was dropped)
        kept = tuple(step[index] for step in drawn)
    return Subject(sampler, column.temperature, column.seed, column.generated, tuple(column.probs), index,
                   round_.number, kept)


def char_label(char: str) -> str:
    """A character as the bars name it: a space is ␣, a newline ⏎, a control its picture."""
    return "␣" if char == " " else visible_line(char)


def bar(fraction: float, width: int) -> str:
    """A horizontal bar of `width` cells filled to `fraction`, in eighths of a cell."""
    eighths = round(max(0.0, min(fraction, 1.0)) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (BLOCKS[part] if part else "")).ljust(width)


def distribution_table(distribution, temperature: float, chosen: str, width: int) -> Text:
    """The top characters at `temperature` as bars with percentages, the chosen one marked."""
    label = "T 1" if temperature == 1 else f"T {format_temperature(temperature)}"
    text = Text()
    text.append(f"{label}", style="bold")
    text.append(f" · entropy {distribution.entropy_bits(temperature):.2f} bits\n", style="dim")
    bar_width = max(4, width - 14)
    for char, probability in distribution.top(TOP, temperature):
        mark = char == chosen
        text.append("▶" if mark else " ", style="bold" if mark else None)
        text.append(char_label(char).ljust(3)[:3], style="reverse bold" if mark else "bold")
        text.append(" ")
        text.append(bar(probability, bar_width), style=prob_style(probability))
        text.append(f"{100 * probability:6.1f}%\n", style="bold" if mark else None)
    text.rstrip()
    return text


def context_line(context: str, chosen: str, width: int) -> Text:
    """The end of the context, on one line, then the chosen character highlighted."""
    shown = visible_line(context)
    room = max(1, width - 4 - cell_len(char_label(chosen)))
    while cell_len(shown) > room:
        shown = shown[max(1, (cell_len(shown) - room)):]
    line = Text("…" if len(shown) < len(visible_line(context)) else "", style="dim")
    line.append(shown, style="italic")
    line.append(char_label(chosen), style="reverse bold")
    return line


def chosen_line(distribution, chosen: str, probability: float, temperature: float) -> Text:
    """The chosen character's rank and probability (at T=1: `probability`, the colour mode's)."""
    rank, _ = distribution.rank(chosen, 1.0)
    line = Text("chose ")
    line.append(char_label(chosen), style="reverse bold")
    line.append(f": rank {rank}, {100 * probability:.1f}% at T 1",
                style=prob_style(probability))
    if temperature != 1:
        rank_t, probability_t = distribution.rank(chosen, temperature)
        line.append(f" · rank {rank_t}, {100 * probability_t:.1f}% at T {format_temperature(temperature)}")
    return line


class InspectorPanel(Widget, can_focus=True):
    """The panel under the columns; it keeps its subject whatever the run does next."""

    # Not scoped: on a short terminal (80x24) the panel takes the training pane's rows
    # while it is open, so that the columns stay in sight.
    SCOPED_CSS = False
    DEFAULT_CSS = """
    Screen.-short.-inspecting TrainingPane {
        display: none;
    }
    InspectorPanel {
        height: 15;
        border: round $accent;
        border-title-color: $text-accent;
        border-subtitle-color: $text-muted;
        background: $surface;
        padding: 0 1;
    }
    """
    BINDINGS = [
        Binding("left", "move(-1)", "Back", show=False),
        Binding("right", "move(1)", "Forward", show=False),
        Binding("home", "move(-1000000)", "First", show=False),
        Binding("end", "move(1000000)", "Last", show=False),
        Binding("escape", "close", "Close", show=False),
    ]

    def __init__(self, subject: Subject, position: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.subject = subject
        self.position = position
        self.trace = None  # engine.modeling.trace.Trace of the subject's text, when made
        self.border_subtitle = "← → move · Esc close"

    # -- what it explains ------------------------------------------------------------------
    def show(self, subject: Subject, position: int) -> None:
        """Explain `subject` at `position`: the trace made so far still serves a column that
        has only grown since (same sampler, its text a continuation)."""
        if subject.sampler is not self.subject.sampler or not subject.text.startswith(self.subject.text):
            self.trace = None
        self.subject = subject
        self._go(position)

    def _go(self, position: int) -> None:
        self.position = max(self.first_position, min(position, len(self.subject.generated) - 1))
        self._update_title()
        if self.distribution() is None:
            self._trace(self.subject)
        self.refresh()

    @property
    def first_position(self) -> int:
        """The first character with a context (without a seed, the second)."""
        return 0 if self.subject.seed else 1

    @property
    def chosen(self) -> str:
        return self.subject.generated[self.position]

    def distribution(self):
        """The NextChar the chosen character was drawn from: as the stream kept it, else as a
        sampler that reads in windows read it, else from the trace (None until traced)."""
        subject, sampler = self.subject, self.subject.sampler
        kept = subject.distributions is not None and self.position < len(subject.distributions)
        if kept or sampler.reading is not None:  # (read in windows: a few steps, not the trace's)
            context, _ = encode(sampler, subject.context(self.position))  # as the model read it
            drawn = subject.distributions[self.position] if kept else \
                sampler.drawn_from(subject.seed, subject.generated[:self.position])
            return NextChar(context, tuple(sampler.vocab), drawn)
        if self.trace is None:
            return None
        position = len(self.subject.context(self.position))
        return self.trace.next_char(position) if position <= len(self.trace.text) else None

    @work(thread=True, exclusive=True, group="inspector", exit_on_error=False)
    def _trace(self, subject: Subject) -> None:
        from engine.modeling.trace import trace

        try:
            traced = trace(subject.sampler, subject.text, gates=False)
        except ValueError as error:  # (text the model cannot read: not one a round of it wrote)
            self.app.call_from_thread(self.app.notify, str(error), title="Inspector", severity="error")
            return
        self.app.call_from_thread(self._traced, subject, traced)

    def _traced(self, subject: Subject, traced) -> None:
        if subject.sampler is self.subject.sampler and self.subject.text.startswith(traced.text):
            self.trace = traced
            self.refresh()

    # -- keys ------------------------------------------------------------------------------
    def action_move(self, steps: int) -> None:
        subject = self.subject
        if self.position + steps >= len(subject.generated):  # the column may have grown since
            fresher = subject_of(self.screen.generation_pane, subject.column) \
                if hasattr(self.screen, "generation_pane") else None
            if fresher is not None and fresher.round_number == subject.round_number \
                    and fresher.sampler is subject.sampler:
                self.show(fresher, self.position + steps)
                return
        self._go(self.position + steps)

    def on_mount(self) -> None:
        self.screen.add_class("-inspecting")

    def on_unmount(self) -> None:
        self.screen.remove_class("-inspecting")

    def action_close(self) -> None:
        screen = self.screen
        self.remove()
        columns = list(screen.query(SampleColumn))
        if self.subject.column < len(columns):
            columns[self.subject.column].focus()

    # -- drawing ---------------------------------------------------------------------------
    def _update_title(self) -> None:
        subject = self.subject
        self.border_title = (f"Inspector · T {format_temperature(subject.temperature)} · round "
                             f"{subject.round_number} · character {self.position + 1} of "
                             f"{len(subject.generated)}")

    def render(self):
        width = max(20, self.content_size.width)
        distribution = self.distribution()
        context = context_line(self.subject.context(self.position), self.chosen, width)
        if distribution is None:
            return Group(context, Text("tracing the model over the text…", style="italic dim"))
        half = (width - 3) // 2
        table = Table.grid(padding=(0, 1), expand=True)
        table.add_column(ratio=1)
        table.add_column(width=1)
        table.add_column(ratio=1)
        rule = Text("\n".join("│" * (TOP + 1)))
        table.add_row(distribution_table(distribution, 1.0, self.chosen, half), rule,
                      distribution_table(distribution, self.subject.temperature, self.chosen, half))
        probability = self.subject.probabilities[self.position]
        return Group(context, table, chosen_line(distribution, self.chosen, probability,
                                                 self.subject.temperature))


# -- opening it ------------------------------------------------------------------------------
def open_inspector(screen, column_index: int | None = None, position: int | None = None) -> None:
    """Show the panel on `screen` (the main screen) for a character of a column: by default
    the focused column (else the first) and its last character."""
    pane = screen.generation_pane
    columns = pane.columns
    if column_index is None:
        focused = screen.focused
        column_index = columns.index(focused) if focused in columns else 0
    subject = subject_of(pane, column_index) if columns else None
    if subject is None:
        screen.app.notify("nothing to inspect yet: no character has been sampled", severity="warning")
        return
    position = len(subject.generated) - 1 if position is None else position
    panels = screen.query(InspectorPanel)
    if panels:
        panel = panels.first()
        panel.show(subject, position)
    else:
        panel = InspectorPanel(subject, position)
        footers = screen.query(Footer)
        screen.mount(panel, before=footers.first() if footers else None)
        panel._go(position)
    panel.focus()


def inspect_click(screen, event) -> None:
    """A click on a generated character of a column inspects it."""
    column = event.widget
    if not isinstance(column, SampleColumn):
        return
    offset = event.get_content_offset(column)
    index = char_index_at(column, offset.x, offset.y) if offset is not None else None
    if index is not None and index >= len(column.seed):
        open_inspector(screen, screen.generation_pane.columns.index(column), index - len(column.seed))


def char_index_at(column: SampleColumn, x: int, y: int) -> int | None:
    """The index in column.seed + column.generated of the character drawn at (x, y) of the
    column's content, or None. The column wraps with `line_breaks` and shows each
    character as one or more cells (tui/visible.py): both are undone here."""
    width, height = column.content_size
    lines = column.lines(width)
    first = max(0, len(lines) - min(column.back, max(0, len(lines) - height)) - height)
    row = first + y
    plain = column._text.plain
    starts = []  # of each wrapped line, in `plain`
    position = 0
    for paragraph in plain.split("\n"):
        breaks = line_breaks(paragraph, max(1, width))
        starts.extend(position + start for start in [0, *breaks])
        position += len(paragraph) + 1
    if not 0 <= row < len(starts):
        return None
    end = starts[row + 1] if row + 1 < len(starts) else len(plain)
    cells = 0
    for offset in range(starts[row], end):
        cells += cell_len(plain[offset])
        if cells > x:
            return _char_of_offset(column, offset)
    return None


def _char_of_offset(column: SampleColumn, offset: int) -> int | None:
    """The character whose drawing holds `offset` of the column's plain text."""
    from tui.widgets.generation import _shown

    drawn = 0
    for index, char in enumerate(column.seed + column.generated):
        drawn += len(_shown(char))
        if offset < drawn:
            return index
    return None
