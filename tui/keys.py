"""The app's keys: one table for the Footer, the help screen and the command palette."""

from __future__ import annotations

from dataclasses import dataclass

from engine.config import MAX_TEMPERATURES, TEMPERATURE_RULE


@dataclass(frozen=True)
class KeyAction:
    key: str
    action: str
    label: str         # the Footer's word
    title: str         # the command palette's name
    detail: str        # one line for the help screen and the palette
    key_display: str | None = None
    footer: bool = True  # False: in the help screen and the palette only (the Footer is full)


KEYS = (
    KeyAction("s", "resample", "Sample", "Resample now",
              "a new round from a new random seed text of the corpus (unpins the seed)"),
    KeyAction("e", "edit_seed", "Seed", "Edit the seed text",
              "type the text every round starts from (pinned until s)"),
    KeyAction("t", "edit_temperatures", "Temps", "Edit the temperatures",
              f"1 to {MAX_TEMPERATURES} comma-separated values, each {TEMPERATURE_RULE}, one column each"),
    KeyAction("k", "toggle_colour", "Colour", "Colour by probability",
              "colour each generated character by the probability the model gave it "
              "(on: the line above the columns says so)"),
    KeyAction("p", "toggle_pause", "Pause", "Pause or resume training",
              "pauses between batches; sampling keeps working"),
    KeyAction("r", "retrain", "Reset", "Retrain from scratch",
              "checkpoint the current run, then start it over from step 0 (asks first)"),
    KeyAction("c", "swap_corpus", "Corpus", "Swap the corpus",
              "pick another corpus; training goes on in runs/<name>"),
    KeyAction("x", "export", "Export", "Export the samples",
              "write the current samples to a text file in the run directory"),
    KeyAction("i", "inspect", "Inspect", "Inspect a character",
              "the distribution a sample's character was drawn from: top 10 at T=1 and at the column's "
              "temperature, its rank, the entropy (← → move, Esc closes; or click a character)",
              footer=False),
    KeyAction("n", "cells", "Cells", "Show the LSTM's cells",
              "colour text by one cell's activation (↑ ↓ cells, / ranks them by what they track)",
              footer=False),
    KeyAction("question_mark", "help", "Help", "Help", "keys and what the panes show",
              key_display="?"),
    KeyAction("q", "quit", "Quit", "Quit", "save a checkpoint and leave"),
)
# Keys of a focused sample column (tui/widgets/generation.py SampleColumn), for the help
# screen: they are not app bindings, so the Footer does not show them.
COLUMN_KEYS = (
    ("Tab", "Column", "focus the next sample column (shift+Tab the previous)"),
    ("↑ ↓", "Scroll", "scroll the focused column back or forward a line"),
    ("PgUp PgDn", "Page", "scroll it a page (the column's title shows ↑N lines back)"),
    ("Home End", "Start/end", "its first line; End follows the text as it streams again"),
    ("wheel", "Scroll", "the mouse wheel scrolls the column under the pointer"),
)
NEEDS_SAMPLER = {"resample", "edit_seed", "export", "inspect", "cells"}


def parse_temperatures(value: str) -> tuple[tuple[float, ...] | None, str | None]:
    """The `t` prompt's answer: 1 to MAX_TEMPERATURES numbers, each refused exactly as the
    engine's sampler refuses it, in the engine's own sentence (engine/modeling/sampler.py)."""
    from engine.modeling.sampler import check_option  # (numpy: not before the app's first paint)

    parts = [part.strip() for part in value.replace(" ", ",").split(",") if part.strip()]
    if not 1 <= len(parts) <= MAX_TEMPERATURES:
        return None, f"give between 1 and {MAX_TEMPERATURES} temperatures, separated by commas"
    temperatures = []
    for part in parts:
        try:
            temperature = float(part)
        except ValueError:
            return None, f"{part!r} is not a number"
        try:
            check_option("--temperatures", temperature)
        except ValueError as error:
            return None, str(error)
        temperatures.append(temperature)
    return tuple(temperatures), None
