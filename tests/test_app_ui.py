"""Pilot tests of what char-rnn, torch-rnn and nanoGPT users expect of the app (issue #10):
seed texts of several lines, a corpus picker that takes any path and remembers, keys that
say what they do, and a loss plot that shows the learning that matters. Against the
real engine (tiny corpora, tiny models), as tests/test_app.py.
"""

from __future__ import annotations

import html
import json
import re
import socket

import pytest

from tests.app_fixtures import *  # noqa: F401,F403 (fixtures and helpers)
from tests.app_fixtures import app_options, notified, running_app, tiny_train_config, wait_until
from tests.conftest import tiny_text

slow = pytest.mark.slow


def build(options):
    from tui.app import build_app

    return build_app(options)


def sampling_app(**config):
    config.setdefault("sample_length", 40)
    return build(app_options("tiny", "runs/tiny", no_train=True, config=tiny_train_config(**config)))


def round_done(app, after: int = 0) -> bool:
    pane = app.generation_pane
    return pane.round is not None and pane.round.done and pane.round.number > after


async def quit_app(pilot, app):
    await pilot.press("q")
    await wait_until(pilot, lambda: app.return_code is not None or not app.is_running, what="exit")


def screen_rows(app) -> list[str]:
    """The screen as rows of text, read from the app's own SVG screenshot."""
    svg = app.export_screenshot()
    rows: dict[int, list[tuple[float, str]]] = {}
    for match in re.finditer(r'<text class="[^"]*" x="([\d.]+)" y="[\d.]+" textLength="[\d.]+" '
                             r'clip-path="url\(#[\w-]*?line-(\d+)\)">([^<]*)</text>', svg):
        text = html.unescape(match.group(3)).replace("\xa0", " ")
        rows.setdefault(int(match.group(2)), []).append((float(match.group(1)), text))
    width = max(x for row in rows.values() for x, _ in row) or 1.0
    lines = []
    for index in range(max(rows) + 1):
        cells: dict[int, str] = {}
        for x, text in rows.get(index, []):
            start = round(x / 12.2)  # Textual's SVG: 12.2 units a cell
            for offset, char in enumerate(text):
                cells[start + offset] = char
        lines.append("".join(cells.get(i, " ") for i in range(max(cells, default=-1) + 1)))
    assert width  # (rows were found)
    return lines


# -- 1. priming: a seed of several lines -------------------------------------------------------
@slow
async def test_e_edits_a_seed_of_several_lines(sample_workspace):
    from textual.widgets import TextArea

    from tui.screens.prompt import PromptScreen

    app = sampling_app()
    async with running_app(app, size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: round_done(app), what="a round")
        while "\n" not in app.generation_pane.round.seed:  # a random seed across a line end
            number = app.generation_pane.round.number
            await pilot.press("s")
            await wait_until(pilot, lambda: round_done(app, number), what="another round")
        seed = app.generation_pane.round.seed
        await pilot.press("e")
        assert isinstance(app.screen, PromptScreen)
        editor = app.screen.query_one(TextArea)
        assert editor.text == seed and editor.document.line_count == seed.count("\n") + 1
        await pilot.pause()
        rows = screen_rows(app)
        for line in seed.split("\n"):  # each line of the seed on a row of its own, whole
            assert any(line.strip() in row and "▊" in row for row in rows), (line, rows)

        await pilot.press("f7", *"the will", "enter", *"to power")  # f7 selects all: replaced
        assert editor.text == "the will\nto power"
        number = app.generation_pane.round.number
        await pilot.press("ctrl+s")
        assert not isinstance(app.screen, PromptScreen)
        await wait_until(pilot, lambda: round_done(app, number), what="the round from the seed")
        assert app.generation_pane.round.seed == "the will\nto power"
        assert all(c.plain.startswith("the will\nto power") for c in app.generation_pane.columns)
        info = str(app.generation_pane.query_one("#gen-info").render())
        assert "the will⏎to power" in info and "\n" not in info
        await quit_app(pilot, app)


@slow
async def test_e_keeps_the_dialog_open_on_unknown_characters(sample_workspace):
    from textual.widgets import TextArea

    from tui.screens.prompt import PromptScreen

    app = sampling_app()
    async with running_app(app) as pilot:
        await wait_until(pilot, lambda: round_done(app), what="a round")
        await pilot.press("e")
        app.screen.query_one(TextArea).text = "ROMEO:\nthe"
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, PromptScreen), "an unknown character must keep the dialog open"
        await wait_until(pilot, lambda: notified(app, "':'", "error"), what="the refusal naming ':'")
        await pilot.press("escape")
        assert not isinstance(app.screen, PromptScreen)
        await quit_app(pilot, app)


def test_a_seed_is_drawn_on_one_line_without_control_characters():
    from tui.widgets.generation import one_line

    assert one_line("ROMEO:\nthe\r\x1b[2Jend\tx") == "ROMEO:⏎the \u00b7[2Jend x"
