"""Which LSTM cells track what: simple properties of a text, and each cell's correlation
with them (Karpathy, Johnson and Fei-Fei, "Visualizing and Understanding Recurrent
Networks", 2015, found cells for line length, quotes and brackets this way).

Every property gives one number per character, aligned with the trace (engine/modeling/trace.py):
row t describes the text *after reading text[t]*, as the activation of row t does. So an
opening quote or bracket counts as inside, the closing one as outside again, and the
position in the line is 0 on the newline itself.

- position in line: characters since the last newline (the newline itself 0, the first
  character of a line 1; the text's start counts as a line start).
- inside quotes: between an opening and a closing double quote. A plain `"` toggles;
  the typographic `“` opens and `”` closes. Single quotes (' ‘ ’) are left out: in
  prose they are mostly apostrophes (don't, Nietzsche's) and cannot be told apart.
- inside brackets: the nesting depth of (), [] and {} (any kind closes any) is above 0;
  a closing bracket with nothing open is ignored.
- start of a word: a letter or digit whose previous character is not one (an
  apostrophe between two letters, as in don't, is part of the word).
- upper case: an upper-case letter (constant in a lower-cased run: see below).
- just after a newline: the first character of a line (the one after a newline).

Pearson's r of every cell's activation ("c": tanh of the cell state, "h": the output)
with every property. Where r is undefined because a column never varies, it is 0: a
cell stuck at one value tells nothing, and a property that never varies in this text
(no quotes in it, upper case in a lower-cased run) ranks no cells (`rank_cells` lists
none for it). Figures are honest: a small model trained briefly may have no cell that
tracks quotes; its best |r| says so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

OPENING_BRACKETS, CLOSING_BRACKETS = "([{", ")]}"
APOSTROPHES = "'\u2019"


def position_in_line(text: str) -> np.ndarray:
    """Characters since the last newline, the newline itself 0."""
    steps = np.arange(len(text))
    newline_at = np.where(np.array([char == "\n" for char in text], dtype=bool), steps, -1)
    return (steps - np.maximum.accumulate(newline_at)).astype(np.float64) if len(text) else np.zeros(0)


def inside_quotes(text: str) -> np.ndarray:
    """1 inside double quotes (the opening quote included, the closing one not), else 0."""
    values, inside = np.zeros(len(text)), False
    for t, char in enumerate(text):
        if char == '"':
            inside = not inside
        elif char == "\u201c":
            inside = True
        elif char == "\u201d":
            inside = False
        values[t] = inside
    return values


def inside_brackets(text: str) -> np.ndarray:
    """1 where the bracket nesting depth after the character is above 0, else 0."""
    values, depth = np.zeros(len(text)), 0
    for t, char in enumerate(text):
        if char in OPENING_BRACKETS:
            depth += 1
        elif char in CLOSING_BRACKETS:
            depth = max(depth - 1, 0)
        values[t] = depth > 0
    return values


def word_starts(text: str) -> np.ndarray:
    """1 on the first letter or digit of a word, else 0."""
    in_word = [char.isalnum() for char in text]
    for t in range(1, len(text) - 1):  # don't: the apostrophe joins the two letters
        if text[t] in APOSTROPHES and in_word[t - 1] and in_word[t + 1]:
            in_word[t] = True
    starts = [in_word[t] and (t == 0 or not in_word[t - 1]) for t in range(len(text))]
    return np.array(starts, dtype=np.float64)


def upper_case(text: str) -> np.ndarray:
    return np.array([char.isupper() for char in text], dtype=np.float64)


def after_newline(text: str) -> np.ndarray:
    """1 on the first character of a line (the one after a newline), else 0."""
    return np.array([t > 0 and text[t - 1] == "\n" for t in range(len(text))], dtype=np.float64)


PROPERTIES: dict[str, Callable[[str], np.ndarray]] = {
    "position in line": position_in_line,
    "inside quotes": inside_quotes,
    "inside brackets": inside_brackets,
    "start of a word": word_starts,
    "upper case": upper_case,
    "just after a newline": after_newline,
}


def text_properties(text: str) -> dict[str, np.ndarray]:
    """Every property of `text`, by name (PROPERTIES' order), one float per character."""
    return {name: measure(text) for name, measure in PROPERTIES.items()}


def varies(values: np.ndarray) -> bool:
    """Whether a column takes more than one value (else its correlation is undefined)."""
    return values.size > 1 and bool(values.max() > values.min())


def pearson(activations: np.ndarray, properties: np.ndarray) -> np.ndarray:
    """r[p, u]: Pearson's r of property column p with activation column u, both (steps, n);
    0 wherever either column is constant (r undefined)."""
    activations = np.asarray(activations, dtype=np.float64)
    properties = np.asarray(properties, dtype=np.float64)
    centred_activations = activations - activations.mean(axis=0)
    centred_properties = properties - properties.mean(axis=0)
    norms = np.outer(np.linalg.norm(centred_properties, axis=0), np.linalg.norm(centred_activations, axis=0))
    constant = np.outer(_constant_columns(properties), np.ones(activations.shape[1], dtype=bool)) \
        | _constant_columns(activations)[None, :]
    # einsum rather than a BLAS product: as fast here, and it never waits on BLAS's threads,
    # which on a busy machine made this product alone take up to a second (bench/trace_speed.py).
    covariances = np.einsum("tp,tu->pu", centred_properties, centred_activations)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = covariances / norms
    r[constant | ~np.isfinite(r)] = 0.0
    return np.clip(r, -1.0, 1.0)


def _constant_columns(values: np.ndarray) -> np.ndarray:
    if values.shape[0] < 2:
        return np.ones(values.shape[1], dtype=bool)
    return values.max(axis=0) == values.min(axis=0)


@dataclass(frozen=True)
class CellScore:
    """One cell's correlation with a property, through its better activation."""

    cell: int          # the cell's index in its layer (0-based, as the trace's columns)
    r: float
    activation: str    # "c" (tanh of the cell state) or "h" (the output)

    def as_json(self) -> dict:
        return {"cell": self.cell, "r": self.r, "activation": self.activation}


def correlations(activations: Mapping[str, np.ndarray],
                 properties: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{"c": r, "h": r}, each r[p, u] for the properties in their order (see `pearson`)."""
    columns = np.column_stack(list(properties.values()))
    return {kind: pearson(values, columns) for kind, values in activations.items()}


def rank_cells(activations: Mapping[str, np.ndarray], properties: Mapping[str, np.ndarray],
               top: int | None = None) -> dict[str, list[CellScore]]:
    """For each property, the cells by |r|, largest first, each once with the activation
    ("c" or "h") that correlates better (c on a tie); `top` cuts each list. A property
    that never varies in the text lists no cells: r is undefined there."""
    table = correlations(activations, properties)
    kinds = list(table)
    stacked = np.stack([table[kind] for kind in kinds])           # (kinds, properties, units)
    best_kind = np.abs(stacked).argmax(axis=0)                     # first kind wins a tie
    best_r = np.take_along_axis(stacked, best_kind[None], axis=0)[0]
    ranking = {}
    for row, (name, values) in enumerate(properties.items()):
        if not varies(np.asarray(values)):
            ranking[name] = []
            continue
        order = np.argsort(-np.abs(best_r[row]), kind="stable")[:top]
        ranking[name] = [CellScore(int(cell), float(best_r[row, cell]), kinds[best_kind[row, cell]])
                         for cell in order]
    return ranking
