"""Pilot tests of what char-rnn, torch-rnn and nanoGPT users expect of the app (issue #10):
seed texts of several lines, a corpus picker that takes any path and remembers, keys that
say what they do, and a loss plot that shows the learning that matters. Against the
real engine (tiny corpora, tiny models), as tests/test_app.py.
"""

from __future__ import annotations

import json
import re
import socket

import pytest

from tests.app_fixtures import *  # noqa: F401,F403 (fixtures and helpers)
from tests.app_fixtures import app_options, notified, running_app, screen_rows, tiny_train_config, wait_until
from tests.conftest import tiny_text
from tests.scripted import ScriptedRun

slow = pytest.mark.slow
trains = pytest.mark.trains  # trains a model or imports TensorFlow: `make test-fast` leaves it out


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


# -- 1. priming: a seed of several lines -------------------------------------------------------
async def test_e_edits_a_seed_of_several_lines(tmp_path):
    from textual.widgets import TextArea

    from tui.screens.prompt import PromptScreen

    run = ScriptedRun(tmp_path)
    app = run.app
    async with running_app(app, size=(100, 30)) as pilot:
        await run.begin(pilot)
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


async def test_e_keeps_the_dialog_open_on_unknown_characters(tmp_path):
    from textual.widgets import TextArea

    from tui.screens.prompt import PromptScreen

    run = ScriptedRun(tmp_path)
    app = run.app
    async with running_app(app) as pilot:
        await run.begin(pilot)
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

    assert one_line("ROMEO:\nthe\r\x1b[2Jend\tx") == "ROMEO:⏎the␍␛[2Jend x"  # (tui/visible.py)


# -- 2. the corpus picker -------------------------------------------------------------------------
@slow
@trains
async def test_c_takes_a_typed_path_with_completion_and_remembers_it(tiny_corpus_path, tmp_path, monkeypatch,
                                                                       private_cache_home):
    from textual.widgets import Input, OptionList

    from tui.screens.corpus_picker import CorpusPicker

    workspace = tmp_path / "work"
    workspace.mkdir()
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("CHARLM_CORPORA", str(workspace / "corpora"))  # (none)
    elsewhere = tmp_path / "elsewhere"  # outside the working directory: the tree cannot reach it
    elsewhere.mkdir()
    (elsewhere / "shakespeare.txt").write_text(tiny_text(4000, seed=5), encoding="utf-8")
    app = build(app_options(tiny_corpus_path, workspace / "runs" / "tiny"))
    async with running_app(app) as pilot:
        await wait_until(pilot, lambda: app.phase == "training", what="training")
        recent_file = private_cache_home / "charlm-tui" / "recent.json"
        assert json.loads(recent_file.read_text()) == [str(tiny_corpus_path.resolve())]

        await pilot.press("c")
        picker = app.screen
        assert isinstance(picker, CorpusPicker)
        options = picker.query_one("#named", OptionList)
        assert options.get_option_at_index(0).id == "recent:" + str(tiny_corpus_path.resolve())
        path_input = picker.query_one("#path", Input)
        path_input.focus()
        # the folder part set, the rest typed: each key pressed through Pilot while training runs
        # waits out its idle check (about a second, since the process is never idle)
        path_input.value = "../elsewhere/"
        path_input.cursor_position = len(path_input.value)
        await pilot.press(*"sha")
        await wait_until(pilot, lambda: any("../elsewhere/shakespeare.txt" in row
                                            for row in screen_rows(app)),
                         what="the completion, shown after the cursor")
        await pilot.press("right")  # → takes the completion
        assert path_input.value == "../elsewhere/shakespeare.txt"
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.header.info.corpus == "shakespeare" and app.phase == "training",
                         what="training on the typed path")
        await quit_app(pilot, app)
    assert json.loads(recent_file.read_text()) == [str((elsewhere / "shakespeare.txt").resolve()),
                                                   str(tiny_corpus_path.resolve())]


@slow
@trains
async def test_the_picker_tree_goes_up_a_folder(sample_workspace):
    from tui.screens.corpus_picker import CorpusPicker

    workspace, _, _ = sample_workspace
    app = sampling_app()
    async with running_app(app) as pilot:
        await pilot.app.push_screen(CorpusPicker("tiny"))
        tree = app.screen.query_one("#browser")
        tree.focus()
        await pilot.press("backspace")
        assert tree.path == workspace.resolve().parent
        await wait_until(pilot, lambda: any(child.data.path == workspace.resolve()
                                            for child in tree.root.children), what="the parent's folders")
        await pilot.press("backspace")
        assert tree.path == workspace.resolve().parent.parent
        await pilot.press("escape")
        await quit_app(pilot, app)


def closed_port_url() -> str:
    """A URL whose server refuses connections at once, as when offline."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/nietzsche.txt"


@slow
@trains
async def test_the_picker_says_at_once_that_nietzsche_cannot_be_downloaded(sample_workspace, monkeypatch):
    import engine.data.corpus
    from engine.data import pydocs
    from tui.screens.corpus_picker import CorpusPicker

    monkeypatch.setattr(engine.data.corpus, "NIETZSCHE_URL", closed_port_url())
    app = sampling_app()
    chosen = []
    async with running_app(app) as pilot:
        await pilot.app.push_screen(CorpusPicker("tiny"), chosen.append)
        picker = app.screen
        picker.choose("nietzsche")
        await wait_until(pilot, lambda: not picker.busy, what="the answer")
        assert app.screen is picker and chosen == [], "the picker must stay open, nothing chosen"
        assert notified(app, "cannot be downloaded", "error")
        assert notified(app, "put nietzsche.txt in", "error")
        assert not pydocs.is_cached(), "no fallback corpus may be built for a refused choice"
        await pilot.press("escape")
        await quit_app(pilot, app)


@slow
@trains
async def test_the_fallback_corpus_figures_never_show_under_nietzsche(tmp_path, monkeypatch):
    """Offline, --corpus nietzsche trains pydocs: the picker then lists pydocs' figures as
    pydocs', and corpora/nietzsche.txt, once there, with its own."""
    import engine.data.corpus
    from tui.screens.corpus_picker import CorpusPicker

    monkeypatch.chdir(tmp_path)
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    monkeypatch.setenv("CHARLM_CORPORA", str(corpora))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setattr(engine.data.corpus, "NIETZSCHE_URL", closed_port_url())

    async def picker_rows(app, pilot) -> dict[str, str]:
        await pilot.press("c")
        picker = app.screen
        assert isinstance(picker, CorpusPicker)
        listed = len(picker.entries) + len(getattr(picker, "recent", ()))
        await wait_until(pilot, lambda: len(picker.infos) == listed, what="the corpora measured")
        rows = {option_id: picker.infos[option_id].describe() for option_id in picker.infos}
        await pilot.press("escape")
        return rows

    app = build(app_options("nietzsche", tmp_path / "runs" / "nietzsche"))
    async with running_app(app) as pilot:
        await wait_until(pilot, lambda: app.header.info.corpus == "pydocs" and app.phase == "training",
                         timeout=240, what="training on the fallback")
        pydocs_figures = f"{len(app.main.session.corpus):,} chars"
        rows = await picker_rows(app, pilot)
        assert pydocs_figures in rows["pydocs"]
        assert pydocs_figures not in rows["nietzsche"]

        (corpora / "nietzsche.txt").write_text(tiny_text(5000, seed=8), encoding="utf-8")
        rows = await picker_rows(app, pilot)
        assert rows["nietzsche"].startswith("5,000 chars"), rows
        assert pydocs_figures in rows["recent:pydocs"], "the recent list names what was trained"
        await quit_app(pilot, app)


# -- 3. small things -------------------------------------------------------------------------------
async def test_footer_says_export_and_fits_80_columns_when_training(tmp_path):
    run = ScriptedRun(tmp_path)
    app = run.app
    async with running_app(app, size=(80, 24)) as pilot:
        await run.begin(pilot)
        await wait_until(pilot, lambda: app.phase == "training" and "x Export" in screen_rows(app)[-1],
                         what="training, and the keys that sample in the footer")
        footer = screen_rows(app)[-1]
        assert "p Pause" in footer and "Save" not in footer
        assert footer.rstrip().endswith("q Quit"), footer
        await quit_app(pilot, app)


async def test_k_says_when_colouring_is_on(tmp_path):
    run = ScriptedRun(tmp_path)
    app = run.app
    async with running_app(app) as pilot:
        await run.begin(pilot)
        await wait_until(pilot, lambda: round_done(app), what="a round")

        def info() -> str:
            return str(app.generation_pane.query_one("#gen-info").render())

        assert "colour on" not in info()
        await pilot.press("k")
        assert "colour on" in info()
        await pilot.press("k")
        assert "colour on" not in info()
        await quit_app(pilot, app)


async def test_help_lists_only_the_keys_that_apply_and_column_scrolling(tmp_path):
    from tui.keys import KEYS
    from tui.screens.help import HelpScreen
    from tui.screens.run_keys import CAPABILITIES

    app = ScriptedRun(tmp_path, trains=False).app  # (as sampling only: no pause, retrain or corpus)
    async with running_app(app, size=(100, 60)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.pause()
        shown = "\n".join(screen_rows(app))
        for key in KEYS:
            listed = re.search(rf"(?<!\S){re.escape(key.key_display or key.key)} {key.label}\b", shown)
            assert bool(listed) == (key.action not in CAPABILITIES), key
        assert "Scrolling a sample column" in shown
        for keys in ("Tab", "↑ ↓", "PgUp PgDn", "Home End", "wheel"):
            assert keys in shown
        await pilot.press("escape")
        await quit_app(pilot, app)


async def test_the_palette_lists_quit_once(tmp_path):
    from textual.command import CommandPalette

    app = ScriptedRun(tmp_path).app
    async with running_app(app) as pilot:
        await pilot.press("ctrl+p")
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"quit")
        palette = app.screen
        await wait_until(pilot, lambda: palette.query_one("CommandList").option_count > 0,
                         what="the palette's hits")
        await pilot.pause(0.3)  # (hits arrive from every provider)
        hit_list = palette.query_one("CommandList")
        hits = [str(hit_list.get_option_at_index(i).prompt) for i in range(hit_list.option_count)]
        assert sum("Quit" in hit for hit in hits) == 1, hits
        await pilot.press("escape")
        await quit_app(pilot, app)


# -- 4. the loss plot --------------------------------------------------------------------------
def test_loss_y_range_clips_the_early_spike():
    from tui.widgets.training import loss_y_range

    steps = list(range(1, 201))
    losses = [3.67] + [1.5 + 1.0 / step ** 0.5 for step in steps[1:]]
    low, top = loss_y_range(steps, losses, [100, 200], [1.62, 1.58])
    assert low == min(losses) and top < 1.75 < 3.67
    assert loss_y_range(steps[:9], losses[:9], [], []) is None  # too few points to judge
    flat = [2.0] * 50
    assert loss_y_range(list(range(50)), flat, [], []) is None


async def test_the_loss_plot_shows_the_learning_that_matters_at_80x24(tmp_path):
    from engine import events
    from tui.widgets.training import LossPlot

    run = ScriptedRun(tmp_path)
    app = run.app
    async with running_app(app, size=(80, 24)) as pilot:
        await run.begin(pilot, steps_per_epoch=100)
        # A real run's curve: the first steps' loss far above the learning that follows.
        losses = {step: 3.67 if step == 1 else 1.5 + 1.0 / step ** 0.5 for step in range(1, 41)}
        run.source.emit(*(events.BatchProgress(1, step, 100, step, loss, 1000.0, 16 * step, step / 10)
                          for step, loss in losses.items()))
        plot = app.training_pane.query_one(LossPlot)
        await wait_until(pilot, lambda: len(plot.train.xs) >= 30, what="30 points on the plot")
        await wait_until(pilot, lambda: not plot._dirty, what="a redraw")
        lines = str(plot.render()).split("\n")
        curve_rows = [line for line in lines if any("\u2800" <= ch <= "\u28ff" for ch in line)]
        assert len(curve_rows) >= 4, lines  # (was 2)
        top_labels = [float(m) for line in lines for m in re.findall(r"(\d+\.\d+)↑", line)]
        assert len(top_labels) == 1, lines  # the clipped top is marked...
        assert top_labels[0] < max(plot.train.ys) - 0.1  # ...below the first steps' losses
        await quit_app(pilot, app)
