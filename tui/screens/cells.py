"""The cells view: a text coloured by one LSTM cell's activation (issue 19, item 2).

Karpathy, Johnson and Fei-Fei ("Visualizing and Understanding Recurrent Networks", 2015)
found char-LSTM cells that track line length, quotes and brackets by colouring text with
one cell's activation. This screen does it while the model trains: the model runs over
held-out text (or the current sample) on a thread (engine/modeling/trace.py), each character is
coloured by the cell's value after reading it, blue for negative, red for positive, on
Textual's colours (a terminal without true colour gets the nearest it has; strong values
are also underlined, for one with none). ↑ ↓ browse the cells, `/` ranks them by their
correlation with simple properties of the text (engine/modeling/cellstats.py) and Enter shows the
one chosen. The |r| shown is the real one, and called weak when it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.color import Color
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

from engine.data.windows import held_out_text
from tui.visible import visible_line

DEFAULT_CHARS = 2_000      # of held-out text: traced in a fraction of a second, a few screens to read
WEAK = 0.3                 # an |r| below this tracks the property only loosely
BEST = 3                   # cells listed per property
NEGATIVE, NEUTRAL, POSITIVE = Color(33, 102, 172), Color(247, 247, 247), Color(178, 24, 43)
INK = Color(0, 0, 0)
ACTIVATION_NAMES = {"c": "tanh(c)", "h": "h"}


def colour(value: float) -> Color:
    """The diverging colour of an activation in [-1, 1]: blue, through near-white, to red."""
    end = POSITIVE if value > 0 else NEGATIVE
    return NEUTRAL.blend(end, min(abs(float(value)), 1.0))


def cell_style(value: float) -> Style:
    strong = abs(value) >= 0.6  # marked without colour too (NO_COLOR, a monochrome terminal)
    return Style(color=INK.rich_color, bgcolor=colour(value).rich_color, underline=strong)


def shown_char(char: str) -> str:
    """A character as the coloured text draws it: a newline is ↵ (then the line breaks),
    a tab →, a space stays a space, the rest as tui/visible.py shows it on one line."""
    return "↵" if char == "\n" else "→" if char == "\t" else visible_line(char)


def coloured_text(text: str, values) -> Text:
    coloured = Text()
    for char, value in zip(text, values):
        coloured.append(shown_char(char), cell_style(value))
        if char == "\n":
            coloured.append("\n")
    return coloured


def legend() -> Text:
    line = Text("-1 ")
    for step in range(-4, 5):
        line.append("  ", cell_style(step / 4))
    line.append(" +1 ")
    line.append("blue negative, red positive, underlined beyond ±0.6", style="dim")
    return line


def describe_strength(r: float) -> str:
    return "weak: no cell tracks it" if abs(r) < WEAK else "strong" if abs(r) >= 0.6 else "moderate"


@dataclass(frozen=True)
class Traced:
    """One trace of a text and the cells' ranking against its properties, per layer."""

    text: str
    layers: tuple           # engine.modeling.trace.LayerTrace per layer
    rankings: tuple         # engine.modeling.cellstats.rank_cells per layer


class CellsScreen(Screen):
    """One cell's activation over a text; `/` ranks the cells."""

    DEFAULT_CSS = """
    CellsScreen #cells-title { height: 1; padding: 0 1; background: $panel; text-style: bold; }
    CellsScreen #cells-legend { height: 1; padding: 0 1; }
    CellsScreen #cells-scroll { height: 1fr; padding: 0 1; }
    CellsScreen #cells-ranking { height: 1fr; display: none; }
    CellsScreen.-ranking #cells-ranking { display: block; }
    CellsScreen.-ranking #cells-scroll { display: none; }
    """
    BINDINGS = [
        Binding("up", "cell(-1)", "Cell −"),
        Binding("down", "cell(1)", "Cell +"),
        Binding("a", "activation", "c/h"),
        Binding("l", "layer", "Layer"),
        Binding("t", "source", "Text"),
        Binding("slash", "rank", "Rank", key_display="/"),
        Binding("escape", "back", "Back"),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
    ]
    AUTO_FOCUS = None  # the keys are the screen's: nothing focused until `/` lists the cells

    def __init__(self, sampler, texts: dict[str, str], note: str = "") -> None:
        super().__init__()
        self.sampler = sampler
        self.texts = {name: text for name, text in texts.items() if text}
        self.source = next(iter(self.texts))
        self.note = note          # why the default text is not the held-out one, if it is not
        self.cell, self.layer_index, self.activation = 0, 0, "c"
        self.traced: Traced | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="cells-title")
        yield Static(legend(), id="cells-legend")
        with VerticalScroll(id="cells-scroll", can_focus=False):
            yield Static("", id="cells-text")
        yield OptionList(id="cells-ranking")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self._show_ranking(False)
        self._show()
        self._trace(self.source, self.texts[self.source])

    # -- the trace, on a thread ------------------------------------------------------------
    @work(thread=True, exclusive=True, group="cells", exit_on_error=False)
    def _trace(self, source: str, text: str) -> None:
        from engine.modeling.cellstats import rank_cells, text_properties
        from engine.modeling.trace import trace

        try:
            traced = trace(self.sampler, text, gates=False, probabilities=False, what=source)
        except ValueError as error:
            self.app.call_from_thread(self.app.notify, str(error), title="Cells", severity="error")
            return
        properties = text_properties(traced.text)
        rankings = tuple(rank_cells(layer.activations, properties, top=BEST) for layer in traced.layers)
        self.app.call_from_thread(self._traced, source, Traced(traced.text, traced.layers, rankings))

    def _traced(self, source: str, traced: Traced) -> None:
        if source == self.source:
            self.traced = traced
            self.layer_index = min(self.layer_index, len(traced.layers) - 1)
            self._show()
            self._fill_ranking()

    # -- keys ------------------------------------------------------------------------------
    def action_cell(self, step: int) -> None:
        if self.traced is not None:
            units = self.traced.layers[self.layer_index].units
            self.cell = (self.cell + step) % units
            self._show()

    def action_activation(self) -> None:
        self.activation = "h" if self.activation == "c" else "c"
        self._show()

    def action_layer(self) -> None:
        if self.traced is not None and len(self.traced.layers) > 1:
            self.layer_index = (self.layer_index + 1) % len(self.traced.layers)
            self.cell = min(self.cell, self.traced.layers[self.layer_index].units - 1)
            self._show()
            self._fill_ranking()

    def action_source(self) -> None:
        names = list(self.texts)
        if len(names) > 1:
            self.source = names[(names.index(self.source) + 1) % len(names)]
            self.traced = None
            self._show()
            self._trace(self.source, self.texts[self.source])

    def action_rank(self) -> None:
        self._show_ranking(not self.has_class("-ranking"))

    def action_back(self) -> None:
        if self.has_class("-ranking"):
            self._show_ranking(False)
        else:
            self.dismiss()

    def _show_ranking(self, shown: bool) -> None:
        """The list of cells by property, focused (its ↑ ↓ and Enter), or the text (the
        screen's ↑ ↓ browse the cells: the list, hidden, must not keep the focus)."""
        ranking = self.query_one(OptionList)
        self.set_class(shown, "-ranking")
        ranking.can_focus = shown
        self.set_focus(ranking if shown else None)

    def action_page(self, pages: int) -> None:
        scroll = self.query_one("#cells-scroll", VerticalScroll)
        scroll.scroll_relative(y=pages * max(1, scroll.size.height - 1), animate=False)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            kind, cell, _ = event.option.id.split("-", 2)
            self.cell, self.activation = int(cell), kind
            self._show_ranking(False)
            self._show()

    # -- drawing ---------------------------------------------------------------------------
    def _show(self) -> None:
        title = self.query_one("#cells-title", Static)
        body = self.query_one("#cells-text", Static)
        where = f"{self.source} ({len(self.texts[self.source]):,} chars)"
        if self.traced is None:
            title.update(Text(f"Cells · tracing the model over {where}…"))
            body.update(Text(self.note, style="italic"))
            return
        layer = self.traced.layers[self.layer_index]
        layers = len(self.traced.layers)
        title.update(Text(f"Cell {self.cell} of {layer.units} · {ACTIVATION_NAMES[self.activation]} · "
                          f"layer {self.layer_index + 1} of {layers} · {where}",
                          no_wrap=True, overflow="ellipsis"))
        body.update(coloured_text(self.traced.text, layer.activation(self.activation)[:, self.cell]))

    def _fill_ranking(self) -> None:
        options: list[Option] = [Option(Text("Enter shows a cell · |r|: Pearson's r over this text, "
                                             f"weak below {WEAK}", style="dim"), disabled=True)]
        for name, scores in self.traced.rankings[self.layer_index].items():
            if not scores:
                quiet = Text(f"{name}: does not vary in this text", style="dim")
                options.append(Option(quiet, disabled=True))
                continue
            heading = Text(f"{name}", style="bold")
            best = abs(scores[0].r)
            heading.append(f" · best |r| {best:.2f}, {describe_strength(best)}", style="dim")
            options.append(Option(heading, disabled=True))
            for score in scores:
                options.append(Option(f"   cell {score.cell:>4} {ACTIVATION_NAMES[score.activation]:<7} "
                                      f"r {score.r:+.2f}", id=f"{score.activation}-{score.cell}-{name}"))
        ranking = self.query_one(OptionList)
        ranking.clear_options()
        ranking.add_options(options)


# -- opening it ------------------------------------------------------------------------------
def open_cells(screen) -> None:
    """Push the cells view from the main screen: over held-out text when the training text
    is here, else over the current sample."""
    sampler = screen.sampler
    if sampler is None:
        screen.app.notify("no model yet to look inside", severity="warning")
        return
    texts, note = {}, ""
    corpus = screen.rounds.seed_corpus
    if corpus is not None and len(corpus):
        texts["held-out text"] = held_out_text(corpus, _val_fraction(screen), DEFAULT_CHARS)
    else:
        note = "the training text is not on this machine: the current sample instead"
    sample = _current_sample(screen)
    if sample:
        texts["the current sample"] = sample
    if not texts:
        screen.app.notify("no text to run the model over yet", severity="warning")
        return
    screen.app.push_screen(CellsScreen(sampler, texts, note))


def _val_fraction(screen) -> float:
    """The held-out share of the run shown: a saved run's own, else the one trained."""
    source = screen.source
    config = source.saved_config or (source.config if source.can_swap_corpus else None)
    return (config or screen.options.config_defaults()).val_fraction


def _current_sample(screen) -> str:
    pane = screen.generation_pane
    columns = pane.columns
    if pane.round is None or not columns:
        return ""
    focused = screen.focused
    column = focused if focused in columns else columns[0]
    return column.plain
