"""The help screen: every key, and what each pane shows."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

PANES = (
    ("Header", "the corpus (characters, vocabulary), the model (LSTM layers × units, "
               "parameters), the preset/objective, the device and the run directory."),
    ("Training", "epoch and batch progress, the train loss (running mean of the epoch) and "
                 "the held-out loss after each epoch, in nats and bits per character, the "
                 "speed in target characters per second, elapsed time and ETA. The plot "
                 "shows the train loss over steps (line) and held-out losses (x); its y "
                 "axis spans the recent losses, so the first steps' higher ones run along "
                 "its top edge (marked ↑). The history lists finished epochs (* = cut short)."),
    ("Generation", "one column per temperature. Each starts with the seed text (dim, "
                   "italic) and streams what the model writes after it. Low temperatures "
                   "are safe and repetitive, high ones surprising and noisy. A new round "
                   "starts after every epoch and on s. With colouring on (k), each "
                   "character is coloured by the probability the model gave it: green "
                   "likely, yellow, orange, red (underlined) unlikely."),
    ("Files", "the run directory holds model.keras (the checkpoint), config.json, "
              "vocab.json, metrics.jsonl and the exports written by x. q saves a "
              "checkpoint before quitting; starting again on the same run resumes."),
)


def keys_table(bindings: list[tuple[str, str, str]]) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(justify="right", style="bold", no_wrap=True)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(style="dim")
    for key, description, detail in bindings:
        table.add_row(key, description, detail)
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def __init__(self, bindings: list[tuple[str, str, str]],
                 column_keys: list[tuple[str, str, str]] = ()) -> None:
        super().__init__()
        self.key_rows = bindings
        self.column_rows = list(column_keys)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="help"):
            yield Label("charlm-tui: watch a character-level LSTM learn", classes="dialog-title")
            with VerticalScroll(id="help-body"):
                yield Static(Text("Keys", style="bold underline"))
                yield Static(keys_table(self.key_rows), classes="help-paragraph")
                if self.column_rows:
                    yield Static(Text("Scrolling a sample column", style="bold underline"))
                    yield Static(keys_table(self.column_rows), classes="help-paragraph")
                for title, body in PANES:
                    yield Static(Text(title, style="bold underline"))
                    yield Static(body, markup=False, classes="help-paragraph")
            yield Static("Escape, q or ? closes · ↑↓ PgUp PgDn scroll", classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one("#help-body").focus()

    def action_close(self) -> None:
        self.dismiss(None)
