"""Text properties and cell correlations (engine/modeling/cellstats.py): plain numpy, no TensorFlow,
checked on constructed texts and activations whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from engine.modeling.cellstats import (
    PROPERTIES,
    after_newline,
    inside_brackets,
    inside_quotes,
    pearson,
    position_in_line,
    rank_cells,
    text_properties,
    upper_case,
    word_starts,
)
from tests.conftest import tiny_text


def as_list(values: np.ndarray) -> list[int]:
    return [int(value) for value in values]


def test_position_in_line_counts_characters_since_the_last_newline():
    assert as_list(position_in_line("ab\ncde\n\nf")) == [1, 2, 0, 1, 2, 3, 0, 0, 1]
    assert as_list(position_in_line("")) == []


def test_quotes_open_with_the_opening_quote_and_close_after_the_closing_one():
    assert as_list(inside_quotes('a "bc" d')) == [0, 0, 1, 1, 1, 0, 0, 0]
    # typographic quotes open and close; apostrophes and single quotes are not quotes
    assert as_list(inside_quotes("\u201cit\u2019s\u201d 'x'")) == [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]


def test_brackets_of_any_kind_nest_and_a_stray_closing_one_is_ignored():
    assert as_list(inside_brackets("a(b[c]d)e")) == [0, 1, 1, 1, 1, 1, 1, 0, 0]
    assert as_list(inside_brackets(")a{b}")) == [0, 0, 1, 1, 0]


def test_word_starts_upper_case_and_line_starts():
    assert as_list(word_starts("don't go, 2x")) == [1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0]
    assert as_list(word_starts("'tis")) == [0, 1, 0, 0]
    assert as_list(upper_case("aB cD")) == [0, 1, 0, 0, 1]
    assert as_list(after_newline("a\nb\n\nc")) == [0, 0, 1, 0, 1, 1]


def test_every_property_has_one_value_per_character():
    text = tiny_text(500)
    properties = text_properties(text)
    assert list(properties) == list(PROPERTIES)
    assert all(values.shape == (len(text),) for values in properties.values())


def test_pearson_matches_numpys_corrcoef_and_is_zero_where_a_column_is_constant():
    rng = np.random.default_rng(0)
    activations = rng.normal(size=(200, 5))
    activations[:, 3] = 0.3  # a stuck cell (0.3 is not exact in binary: its spread is rounding)
    properties = np.column_stack([rng.normal(size=200), np.ones(200), activations[:, 0] * 2 + 1])
    r = pearson(activations, properties)
    for p in (0, 2):
        for u in (0, 1, 2, 4):
            assert r[p, u] == pytest.approx(np.corrcoef(properties[:, p], activations[:, u])[0, 1], abs=1e-12)
    assert (r[1] == 0).all() and (r[:, 3] == 0).all()
    assert r[2, 0] == pytest.approx(1.0)


def test_a_cell_that_counts_the_position_in_the_line_ranks_first_with_r_1():
    text = tiny_text(3000)
    properties = text_properties(text)
    rng = np.random.default_rng(1)
    c, h = rng.uniform(-1, 1, size=(2, len(text), 16))
    c[:, 9] = np.tanh(properties["position in line"] / 40)     # monotonic, but not linear: r < 1
    h[:, 4] = properties["position in line"] * 0.01 - 0.2      # linear: r = 1
    c[:, 2] = -properties["start of a word"]                   # anti-correlated: r = -1
    ranking = rank_cells({"c": c, "h": h}, properties)
    best = ranking["position in line"][0]
    assert (best.cell, best.activation, best.r) == (4, "h", pytest.approx(1.0))
    assert ranking["position in line"][1].cell == 9 and 0.8 < ranking["position in line"][1].r < 1
    word = ranking["start of a word"][0]
    assert (word.cell, word.activation, word.r) == (2, "c", pytest.approx(-1.0))
    for scores in ranking.values():
        assert sorted({score.cell for score in scores}) == list(range(16)) or not scores  # each cell once
        assert [abs(s.r) for s in scores] == sorted((abs(s.r) for s in scores), reverse=True)
    top_three = rank_cells({"c": c, "h": h}, properties, top=3)
    assert top_three["start of a word"] == ranking["start of a word"][:3]


def test_a_property_the_text_never_shows_ranks_no_cells():
    text = "no quotes, no brackets and no capitals here\n" * 20
    properties = text_properties(text)
    c = np.random.default_rng(2).uniform(-1, 1, size=(len(text), 4))
    ranking = rank_cells({"c": c, "h": c}, properties)
    assert ranking["inside quotes"] == ranking["inside brackets"] == ranking["upper case"] == []
    assert len(ranking["position in line"]) == 4
    assert {score.activation for score in ranking["position in line"]} == {"c"}  # c wins a tie with h
