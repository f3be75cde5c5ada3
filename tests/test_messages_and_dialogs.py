"""What the issue's users met in the app's dialogs and messages (issue 16): a temperature
the prompt accepted that crashed the app, a header without the model while training, an
export titled `model LSTM NonexNone`, a picker focused on its list, a picker that left
an explicit --run, a seed editor that did not say how to clear it, reason codes instead
of words, a watch status cut at 120 columns, a missing corpus that opened the app.
Against the real engine (tiny corpora and models), as tests/test_app.py."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.app_fixtures import *  # noqa: F401,F403 (fixtures and helpers)
from tests.app_fixtures import app_options, notified, running_app, screen_rows, tiny_train_config, wait_until
from tests.ptyrun import charlm_command, run_in_pty
from tests.scripted import ScriptedRun
from tests.waiting import wait_for_app

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


# -- temperatures: the prompt refuses exactly what the engine refuses ------------------------------
def _engine_sampler():
    from engine.modeling.sampler import Sampler, weight_shapes

    rng = np.random.default_rng(0)
    vocab = ("a", "b", "c")
    weights = {name: rng.normal(size=shape) for name, shape in weight_shapes(len(vocab), 1, 4).items()}
    return Sampler.from_weights(vocab, weights)


ENGINE = _engine_sampler()


def engine_verdict(temperature: float) -> str | None:
    """None if the engine's sampler takes this temperature, else what it says."""
    try:
        ENGINE.stream("ab", [temperature], 1)
    except ValueError as error:
        return str(error)
    return None


EDGES = [0.0, -0.0, 0.005, 0.00999, 0.01, 0.010000000000000002, 9.999, 10.0, 10.000000001, -0.01, -1.0,
         float("nan"), float("inf"), float("-inf"), 1e-300, 5e-324]


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.sampled_from(EDGES), st.floats(allow_nan=True, allow_infinity=True),
                 st.floats(min_value=-0.02, max_value=0.02), st.floats(min_value=9.9, max_value=10.1)))
def test_the_prompt_refuses_exactly_what_the_engine_refuses_in_its_words(temperature):
    from tui.keys import parse_temperatures

    parsed, error = parse_temperatures(repr(temperature))
    assert error == engine_verdict(temperature)
    if error is None:
        assert parsed == (temperature,)


async def test_t_refuses_0_005_in_the_dialog_and_the_app_keeps_running(tmp_path):
    from textual.widgets import Input, Static

    from tui.screens.prompt import PromptScreen

    run = ScriptedRun(tmp_path)
    app = run.app
    async with running_app(app) as pilot:
        await run.begin(pilot)
        await wait_until(pilot, lambda: round_done(app), what="a round")
        await pilot.press("t")
        assert isinstance(app.screen, PromptScreen)
        app.screen.query_one(Input).value = ""
        await pilot.press(*"0.005", "enter")
        await pilot.pause()
        assert isinstance(app.screen, PromptScreen), "the dialog stays open"
        sentence = "--temperatures must be 0 (greedy) or a number from 0.01 to 10, not 0.005"
        assert str(app.screen.query_one("#prompt-error", Static).render()) == sentence
        assert notified(app, sentence, "error") and app.is_running and app.return_code is None
        app.screen.query_one(Input).value = ""
        await pilot.press(*"0, 1", "enter")
        await wait_until(pilot, lambda: app.main.temperatures == (0.0, 1.0) and round_done(app),
                         what="a round at 0 and 1")
        assert [column.border_title for column in app.generation_pane.columns][0].startswith("T 0 (greedy)")
        await quit_app(pilot, app)
    assert app.return_code == 0


# -- the header and the export while training ---------------------------------------------------------
@slow
@trains
async def test_the_header_names_the_model_while_training_and_the_export_too(tiny_corpus_path, tmp_path):
    run_dir = tmp_path / "run"
    app = build(app_options(tiny_corpus_path, run_dir))
    async with running_app(app) as pilot:
        await wait_until(pilot, lambda: app.phase == "training" and app.header.info.parameters is not None,
                         what="training")
        info = app.header.info
        assert (info.layers, info.units, info.preset, info.objective) == (1, 8, "fast", "all")
        header = app.header.render().plain
        assert f"model LSTM 1×8 {info.parameters:,} params" in header and "preset fast/all" in header
        await wait_until(pilot, lambda: round_done(app), what="a round")
        await pilot.press("x")
        await wait_until(pilot, lambda: notified(app, "samples-"), what="the export")
        exported = next(run_dir.glob("samples-*.txt")).read_text(encoding="utf-8")
        assert f"model LSTM 1×8 {info.parameters:,} params · preset fast ·" in exported.splitlines()[1]
        assert "None" not in exported.splitlines()[1]
        await quit_app(pilot, app)


# -- the corpus picker ---------------------------------------------------------------------------------
@slow
@trains
async def test_the_picker_opens_on_its_path_input_and_keeps_an_explicit_run(tiny_corpus_path, tmp_path,
                                                                             monkeypatch):
    from textual.widgets import Input

    from tui.screens.corpus_picker import CorpusPicker

    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "my-run"
    app = build(app_options(tiny_corpus_path, run_dir))
    async with running_app(app) as pilot:
        await wait_until(pilot, lambda: app.phase == "training", what="training")
        session = app.main.session
        await pilot.press("c")
        picker = app.screen
        assert isinstance(picker, CorpusPicker)
        assert app.focused is picker.query_one("#path", Input), "it invites a path: the cursor is there"
        # the corpus being trained, by a path relative to the working directory (each key typed
        # while training waits for the screen, so a short path keeps this test quick)
        await pilot.press(*tiny_corpus_path.name, "enter")
        await wait_until(pilot, lambda: notified(app, "is the corpus being trained"), what="the answer")
        assert app.main.session is session and not session.stopping, "training went on, untouched"
        assert str(session.run_dir) == str(run_dir) and app.phase == "training"
        assert not (tmp_path / "runs").exists(), "nothing started over in runs/<name>"
        await quit_app(pilot, app)


# -- the seed editor ---------------------------------------------------------------------------------
async def test_the_seed_editor_says_how_to_clear_it_and_that_works(tmp_path):
    from textual.widgets import Static, TextArea

    from tui.screens.prompt import PromptScreen

    run = ScriptedRun(tmp_path)
    app = run.app
    async with running_app(app) as pilot:
        await run.begin(pilot)
        await wait_until(pilot, lambda: round_done(app), what="a round")
        await pilot.press("e")
        assert isinstance(app.screen, PromptScreen)
        editor = app.screen.query_one(TextArea)
        assert editor.text  # pre-filled with the round's seed
        hint = " ".join(str(widget.render()) for widget in app.screen.query(Static))
        assert "F7 selects all" in hint and "Backspace clears it" in hint, hint
        await pilot.press("f7", "backspace")
        assert editor.text == ""
        await pilot.press("escape")
        await quit_app(pilot, app)


# -- words, not reason codes ---------------------------------------------------------------------------
@slow
@trains
async def test_watch_says_why_the_run_ended_in_words_that_fit_120_columns(saved_run, tmp_path, monkeypatch):
    from tui.options import AppOptions

    _, _, run_dir = saved_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns(".lock"))
    with open(copy / "metrics.jsonl", "a", encoding="utf-8") as metrics:
        metrics.write(json.dumps({"kind": "end", "epoch": 3, "step": 1_234_567, "wall": 9.0, "chars": 0,
                                  "train_loss": 1.6, "val_loss": 1.7, "reason": "time_budget"}) + "\n")
    monkeypatch.chdir(tmp_path)
    app = build(AppOptions(corpus="tiny", run_dir=str(copy), mode="watch", sample_length=40, seed=5))
    async with running_app(app, size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.main.status()[0] == "the run ended: time budget reached",
                         what="the end of the run")
        # (the stats redraw twice a second)
        status_row = await wait_for_app(pilot, lambda: next(
            (row for row in screen_rows(app) if "the run ended" in row), None), 10, "the status on screen")
        assert "the run ended: time budget reached" in status_row and "…" not in status_row.split("│")[0]
        await quit_app(pilot, app)


def test_a_missing_corpus_is_refused_before_the_app_opens(tmp_path):
    (tmp_path / "corpora").mkdir()  # (no named corpora of this machine's)
    result = run_in_pty([*charlm_command(), "--corpus", str(tmp_path / "nothing.txt"), "--run",
                         str(tmp_path / "run")], env={"CHARLM_CORPORA": str(tmp_path / "corpora")},
                        cwd=tmp_path, timeout=30)
    assert result.code == 1, result.text[-1000:]  # (None: the app opened and waited for a key)
    assert b"\x1b[?1049h" not in result.output  # the screen never switched to the app's
    assert result.text.strip() == ("charlm-tui: error: no such file, folder or named corpus: "
                                   f"{tmp_path / 'nothing.txt'} (named corpora: nietzsche, pydocs)")
    assert not (tmp_path / "run").exists()
