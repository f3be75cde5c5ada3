"""The shape of a text, beyond its characters: how long its lines are, whether its
quotes and brackets close. Pure functions over strings, so a sample can be compared
with the text its model was trained on (bench/structure.py).

The per-character loss barely sees these: newlines are ~1.5% of Nietzsche's characters,
yet a model that has not learnt where a line ends writes lines of every length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BRACKETS = ("()", "[]", "{}")
QUOTE = '"'


def line_lengths(text: str) -> np.ndarray:
    """The length of every line, the newline not counted; an unfinished last line (a
    sample cut off) counts with the length it has, so a text without a newline is one
    line as long as itself."""
    pieces = text.split("\n")
    if len(pieces) > 1 and pieces[-1] == "":
        pieces.pop()  # a text ending with a newline has no line after it
    return np.array([len(piece) for piece in pieces], dtype=np.int64)


def share_in_long_lines(text: str, limit: float) -> float:
    """The share of the text's line characters that lie in lines longer than `limit`."""
    lengths = line_lengths(text)
    total = lengths.sum()
    return float(lengths[lengths > limit].sum() / total) if total else 0.0


def bracket_imbalance(text: str) -> float:
    """Unmatched brackets, (), [] and {}, as a share of all brackets: a closer with none
    open, or an opener never closed (0: every bracket pairs, 1: none does)."""
    unmatched = total = 0
    for opener, closer in BRACKETS:
        depth = 0
        for char in text:
            if char == opener:
                depth += 1
                total += 1
            elif char == closer:
                total += 1
                if depth:
                    depth -= 1
                else:
                    unmatched += 1
        unmatched += depth
    return unmatched / total if total else 0.0


def odd_quote_share(text: str) -> float:
    """The share of paragraphs (blocks between blank lines) with an odd number of double
    quotes, i.e. one left open, among those that hold any (0 when none does)."""
    counts = [block.count(QUOTE) for block in text.split("\n\n")]
    quoted = [count for count in counts if count]
    return sum(count % 2 for count in quoted) / len(quoted) if quoted else 0.0


@dataclass(frozen=True)
class Shape:
    """What bench/structure.py compares: line lengths, over-long lines, balance."""

    median: float          # line length, characters
    p90: float
    p99: float
    long_share: float      # characters in lines over `long_limit`
    long_limit: float
    brackets: float        # bracket_imbalance
    quotes: float          # odd_quote_share

    def as_json(self) -> dict:
        return {name: round(float(value), 4) for name, value in self.__dict__.items()}


def shape(text: str, long_limit: float | None = None) -> Shape:
    """The shape of `text`; lines over `long_limit` are over-long (None: twice its own p99)."""
    if not text:
        raise ValueError("the text is empty")
    lengths = line_lengths(text)
    median, p90, p99 = (float(np.percentile(lengths, q)) for q in (50, 90, 99))
    limit = 2 * p99 if long_limit is None else long_limit
    return Shape(median, p90, p99, share_in_long_lines(text, limit), limit, bracket_imbalance(text),
                 odd_quote_share(text))


def compare(sample: Shape, reference: Shape) -> dict:
    """A sample's shape against its training text's: line median and p90 as ratios (1 is
    the text's), over-long characters (lines over twice the text's p99) and balance."""
    return {"median_ratio": round(sample.median / reference.median, 3) if reference.median else None,
            "p90_ratio": round(sample.p90 / reference.p90, 3) if reference.p90 else None,
            "long_share": round(sample.long_share, 4),
            "brackets": round(sample.brackets, 4), "quotes": round(sample.quotes, 4)}
