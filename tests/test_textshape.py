"""The shape measures on hand-made text."""

from __future__ import annotations

import pytest

from engine.data.textshape import (
    bracket_imbalance,
    compare,
    line_lengths,
    odd_quote_share,
    shape,
    share_in_long_lines,
)


def test_line_lengths_count_an_unfinished_last_line_and_not_a_final_newline():
    assert list(line_lengths("ab\ncde\n")) == [2, 3]
    assert list(line_lengths("ab\ncde\nfg")) == [2, 3, 2]
    assert list(line_lengths("x" * 50)) == [50]
    assert list(line_lengths("a\n\nb\n")) == [1, 0, 1]


def test_characters_in_long_lines():
    text = "a" * 10 + "\n" + "b" * 30 + "\n" + "c" * 60 + "\n"
    assert share_in_long_lines(text, 20) == pytest.approx(90 / 100)
    assert share_in_long_lines(text, 60) == 0.0


def test_bracket_imbalance_counts_stray_closers_and_open_openers():
    assert bracket_imbalance("(a [b] {c})") == 0.0
    assert bracket_imbalance(") (") == 1.0                    # neither pairs
    assert bracket_imbalance("(a) (b") == pytest.approx(1 / 3)   # one opener of three brackets left open
    assert bracket_imbalance("no brackets") == 0.0


def test_odd_quotes_by_paragraph():
    assert odd_quote_share('He said "yes".\n\nShe said "no".') == 0.0
    assert odd_quote_share('He said "yes.\nstill open\n\nShe said "no".\n\nnothing') == pytest.approx(1 / 2)
    assert odd_quote_share("no quotes at all") == 0.0


def test_a_sample_compared_with_its_text():
    text = "".join(("x" * length) + "\n" for length in [40] * 95 + [42] * 5)
    reference = shape(text)
    assert (reference.median, reference.p99, reference.long_limit) == (40, 42, 84)
    sample = shape("x" * 20 + "\n" + "y" * 200, long_limit=reference.long_limit)
    assert sample.long_share == pytest.approx(200 / 220)
    assert compare(sample, reference)["median_ratio"] == pytest.approx(110 / 40)
    assert compare(shape(text, reference.long_limit), reference) == \
        {"median_ratio": 1.0, "p90_ratio": 1.0, "long_share": 0.0, "brackets": 0.0, "quotes": 0.0}
    with pytest.raises(ValueError):
        shape("")
