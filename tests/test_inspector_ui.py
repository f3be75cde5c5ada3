"""The inspector (i, a click) and the cells view (n), driven as a person drives them, on
the saved run of tests/app_fixtures.py: its sampler reads seeded numpy weights, so the
figures are real and the screens the same every time (snapshots in tests/__snapshots__/).

    pytest tests/test_inspector_ui.py [--snapshot-update]
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.app_fixtures import *  # noqa: F403 (the fixtures)
from tests.app_fixtures import (
    app_options,
    saved_app,
    settled,
    tiny_train_config,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("same_device_everywhere")]


def panel(app):
    from tui.widgets.inspector import InspectorPanel

    panels = app.screen.query(InspectorPanel)
    return panels.first() if panels else None


async def traced(pilot) -> None:
    await wait_until(pilot, lambda: panel(pilot.app) is not None and panel(pilot.app).distribution()
                     is not None, 30, "the inspector's trace")


def assert_explains(app, inspector) -> None:
    """The panel's figures are engine/nextchar's for the column's own sampler and text (the
    round's, as the panel opened on it: training, a later round may have begun since)."""
    from engine.modeling.nextchar import NextChar, next_char

    subject = inspector.subject
    expected = next_char(subject.sampler, subject.seed + subject.generated[:inspector.position])
    # what the stream drew from: with the run's reading, what it read since its last restart
    drawn = subject.sampler.drawn_from(subject.seed, subject.generated[:inspector.position])
    expected = NextChar(expected.context, expected.vocab, drawn)
    shown = inspector.distribution()
    assert shown.context == expected.context
    np.testing.assert_allclose(shown.probabilities, expected.probabilities, rtol=0, atol=1e-9)
    for temperature in (1.0, subject.temperature):
        assert [c for c, _ in shown.top(10, temperature)] == [c for c, _ in expected.top(10, temperature)]
        assert shown.entropy_bits(temperature) == pytest.approx(expected.entropy_bits(temperature), abs=1e-9)
    chosen = subject.generated[inspector.position]
    assert inspector.chosen == chosen
    # The chosen character's probability at T=1 is the colour mode's figure, and nextchar's.
    probability = subject.probabilities[inspector.position]
    assert probability == pytest.approx(expected.rank(chosen)[1], abs=1e-9)
    pane = app.generation_pane
    if pane.round.number == subject.round_number:
        column = pane.columns[subject.column]
        assert column.seed == subject.seed and column.generated.startswith(subject.generated)
        assert probability == column.probs[inspector.position]


def rendered(widget) -> str:
    from rich.console import Console

    console = Console(width=widget.content_size.width, record=True, color_system=None)
    console.print(widget.render())
    return console.export_text()


async def test_i_arrows_and_escape(sample_workspace):
    app = saved_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settled(pilot)
        await pilot.press("i")
        await traced(pilot)
        inspector = panel(app)
        column = app.generation_pane.columns[0]
        assert inspector.subject.column == 0 and inspector.position == len(column.generated) - 1
        assert app.screen.focused is inspector
        # The round kept what each character was drawn from: no second pass over the text.
        assert inspector.subject.distributions is not None and inspector.trace is None
        assert_explains(app, inspector)
        text = rendered(inspector)
        assert "entropy" in text and "chose" in text and "%" in text
        _, expected_probability = inspector.distribution().rank(inspector.chosen)
        assert f"{100 * expected_probability:.1f}% at T 1" in text

        await pilot.press("left", "left", "left")
        assert inspector.position == len(column.generated) - 4
        assert "character " + str(len(column.generated) - 3) in str(inspector.border_title)
        assert_explains(app, inspector)
        await pilot.press("home")
        assert inspector.position == 0
        assert_explains(app, inspector)
        await pilot.press("right")
        assert inspector.position == 1
        await pilot.press("escape")
        await pilot.pause()
        assert panel(app) is None
        assert app.screen.focused is column


async def test_the_panel_keeps_the_rounds_sampler(sample_workspace):
    """A new round (a later checkpoint) does not change what the open panel explains."""
    app = saved_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settled(pilot)
        await pilot.press("tab", "i")  # the focused column
        await traced(pilot)
        inspector = panel(app)
        first = inspector.subject
        before = inspector.distribution().probabilities.copy()
        app.main.rounds.sampler = type(first.sampler).from_weights(
            first.sampler.vocab, {name: w * 0.5 for name, w in first.sampler.weights().items()},
            lowercase=first.sampler.lowercase)
        app.main.action_resample()
        await wait_until(pilot, lambda: app.generation_pane.round.number > first.round_number, 30,
                         "a new round")
        await pilot.press("left")
        assert inspector.subject is first
        np.testing.assert_array_equal(panel(app).subject.sampler.weights()["dense_bias"],
                                      first.sampler.weights()["dense_bias"])
        await pilot.press("right")
        np.testing.assert_array_equal(inspector.distribution().probabilities, before)


async def test_a_click_on_a_character_inspects_it(sample_workspace):
    from tui.widgets.inspector import char_index_at

    app = saved_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settled(pilot)
        column = app.generation_pane.columns[1]
        width, height = column.content_size
        # The last row drawn holds generated text: click its third cell.
        y = min(height, len(column.lines(width))) - 1
        index = char_index_at(column, 2, y)
        assert index is not None and index >= len(column.seed)
        await pilot.click(column, offset=(2, y + 1))  # (+1: the column's top border)
        await traced(pilot)
        inspector = panel(app)
        assert inspector.subject.column == 1
        assert inspector.position == index - len(column.seed)
        assert_explains(app, inspector)


def test_inspector_80x24(snap_compare, sample_workspace):
    async def inspect(pilot) -> None:
        await settled(pilot)
        await pilot.press("i", "left", "left")
        await traced(pilot)
        await pilot.pause(0.1)

    assert snap_compare(saved_app(), terminal_size=(80, 24), run_before=inspect)


# -- the cells view --------------------------------------------------------------------------
def cells_screen(app):
    from tui.screens.cells import CellsScreen

    return app.screen if isinstance(app.screen, CellsScreen) else None


async def cells_traced(pilot) -> None:
    await wait_until(pilot, lambda: cells_screen(pilot.app) is not None and cells_screen(pilot.app).traced
                     is not None, 30, "the cells view's trace")
    await pilot.pause(0.1)


async def test_n_browses_ranks_and_shows_a_cell(sample_workspace):
    from engine.data.windows import held_out_text
    from engine.modeling.cellstats import rank_cells, text_properties
    from engine.modeling.trace import trace
    from tui.screens.cells import BEST, DEFAULT_CHARS

    app = saved_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settled(pilot)
        sampler = app.main.sampler
        await pilot.press("n")
        await cells_traced(pilot)
        view = cells_screen(app)
        # Held-out text by default: the corpus's tail, from a line start.
        expected_text = held_out_text(app.main.rounds.seed_corpus, 0.1, DEFAULT_CHARS)
        assert view.source == "held-out text" and view.traced.text == expected_text
        expected = trace(sampler, expected_text, gates=False, probabilities=False)
        title = view.query_one("#cells-title")
        assert str(title.render()).startswith("Cell 0 of 16 · tanh(c)")
        await pilot.press("down", "down", "down", "up")
        assert view.cell == 2
        assert str(title.render()).startswith("Cell 2 of 16")
        await pilot.press("a")
        assert view.activation == "h"
        shown = view.query_one("#cells-text").render()
        # Every character is coloured by cell 2's h, as the trace has it.
        from tui.screens.cells import colour

        spans = [span for span in shown.spans if shown.plain[span.start:span.end] != "\n"]
        assert len(spans) == len(expected_text)
        assert [span.style.background.rgb for span in spans] == \
            [colour(value).rgb for value in expected.layers[0].h[:, 2]]

        await pilot.press("slash")
        ranking = view.query_one("#cells-ranking")
        assert view.has_class("-ranking") and app.screen.focused is ranking
        ranked = rank_cells(expected.layers[0].activations, text_properties(expected_text), top=BEST)
        lines = [str(ranking.get_option_at_index(i).prompt) for i in range(ranking.option_count)]
        best = ranked["position in line"][0]
        heading = next(line for line in lines if line.startswith("position in line"))
        assert f"best |r| {abs(best.r):.2f}" in heading
        assert ("weak" in heading) == (abs(best.r) < 0.3)
        # Enter on the position-in-line's best cell shows it.
        wanted = f"{best.activation}-{best.cell}-position in line"
        index = next(i for i in range(ranking.option_count) if ranking.get_option_at_index(i).id == wanted)
        ranking.highlighted = index
        await pilot.press("enter")
        assert not view.has_class("-ranking")
        assert (view.cell, view.activation) == (best.cell, best.activation)

        await pilot.press("t")  # the current sample instead
        await cells_traced(pilot)
        assert view.source == "the current sample"
        assert view.traced.text == app.generation_pane.columns[0].plain
        await pilot.press("escape")
        await pilot.pause()
        assert cells_screen(app) is None and app.screen is app.main


def test_cells_view_80x24(snap_compare, sample_workspace):
    async def cells(pilot) -> None:
        await settled(pilot)
        await pilot.press("n")
        await cells_traced(pilot)
        await pilot.press("down")
        await pilot.pause(0.1)

    assert snap_compare(saved_app(), terminal_size=(80, 24), run_before=cells)


def test_cells_ranking_80x24(snap_compare, sample_workspace):
    async def ranking(pilot) -> None:
        await settled(pilot)
        await pilot.press("n")
        await cells_traced(pilot)
        await pilot.press("slash")
        await pilot.pause(0.1)

    assert snap_compare(saved_app(), terminal_size=(80, 24), run_before=ranking)


def app_in(mode: str, workspace):
    """The app training the tiny corpus, or watching the saved run as another process's."""
    from tui.app import build_app
    from tui.options import AppOptions

    if mode == "watch":
        return build_app(AppOptions(corpus="tiny", run_dir="runs/tiny", mode="watch", sample_length=60,
                                    seed=5))
    return build_app(app_options(workspace / "corpora" / "tiny.txt", workspace / "runs" / "training",
                                 config=tiny_train_config(sample_length=60)))


@pytest.mark.parametrize("mode", ["train", "watch"])
async def test_the_inspector_while_training_and_watching(mode, sample_workspace):
    from tests.app_fixtures import running_app

    app = app_in(mode, sample_workspace[0])
    async with running_app(app, size=(80, 24)) as pilot:
        pane = app.generation_pane
        await wait_until(pilot, lambda: pane.round is not None and len(pane.columns[0].chars) >= 5, 120,
                         "a round to stream")
        await pilot.press("i")
        await traced(pilot)
        inspector = panel(app)
        assert_explains(app, inspector)
        await pilot.press("left")
        assert_explains(app, inspector)
        await pilot.press("escape")
        await pilot.press("q")
