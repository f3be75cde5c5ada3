"""Pilot tests of the app against the real engine (tiny corpus, tiny model).

Each test drives one key (or one failure) through a running app. The first test to
train pays for the TensorFlow import (~4 s); the others pay a second or two for Keras
to trace the new model.
"""

from __future__ import annotations

import os
import sys
import time

import pytest

from tests.app_fixtures import *  # noqa: F401,F403 (fixtures and helpers)
from tests.app_fixtures import app_options, notified, running_app, tiny_train_config, wait_until
from tests.conftest import tiny_text
from tests.scripted import ScriptedRun

slow = pytest.mark.slow  # runs the real engine (TensorFlow); selectable with -m slow
trains = pytest.mark.trains  # trains a model or imports TensorFlow: `make test-fast` leaves it out


def build(options):
    from tui.app import build_app

    return build_app(options)


def streaming_done(app):
    pane = app.generation_pane
    return pane.round is not None and pane.round.done


def training(app, min_step: int = 1):
    return app.phase == "training" and app.training_pane.progress.step >= min_step


async def until_round(pilot, app, after: int = 0, what="a finished generation round"):
    await wait_until(pilot, lambda: streaming_done(app) and app.generation_pane.round.number > after,
                     what=what)


async def quit_app(pilot, app):
    await pilot.press("q")
    await wait_until(pilot, lambda: app.return_code is not None or not app.is_running, what="exit")


# -- start-up -----------------------------------------------------------------------------------
async def test_first_paint_shows_loading_state(tmp_path):
    app = ScriptedRun(tmp_path).app  # (nothing said yet: the source is a trainer still loading)
    async with running_app(app) as pilot:
        await pilot.pause()
        assert app.phase == "loading"
        assert "loading" in app.training_pane.status
        assert "waiting for the model" in str(app.generation_pane.query_one("#gen-info").render())
        await quit_app(pilot, app)


@slow
@trains
async def test_trains_streams_and_quit_saves_checkpoint(tiny_corpus_path, tmp_path):
    run_dir = tmp_path / "run"
    app = build(app_options(tiny_corpus_path, run_dir))
    async with running_app(app) as pilot:
        await wait_until(pilot, lambda: training(app, 2), what="training steps")
        header = app.header.info
        assert header.corpus == "tiny" and header.vocab and header.parameters and header.device
        await until_round(pilot, app)
        columns = app.generation_pane.columns
        assert len(columns) == 4
        assert all(len(c.generated) == 40 for c in columns)
        assert all(c.plain.startswith(app.generation_pane.round.seed) for c in columns)
        await quit_app(pilot, app)
    assert app.return_code == 0
    assert (run_dir / "model.keras").is_file()


@slow
@trains
async def test_the_app_writes_the_samples_of_each_epoch_as_train_does(tiny_corpus_path, tmp_path):
    run_dir = tmp_path / "run"
    app = build(app_options(tiny_corpus_path, run_dir, config=tiny_train_config(epochs=2)))
    async with running_app(app) as pilot:
        await wait_until(pilot, lambda: app.phase == "finished", what="the two epochs")
        await quit_app(pilot, app)
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["epoch-0001.txt", "epoch-0002.txt"]
    text = (run_dir / "samples" / "epoch-0002.txt").read_text()
    assert "--- temperature 0.2" in text and "--- temperature 1.2" in text


# -- keys --------------------------------------------------------------------------------------
@slow
@trains
async def test_s_resamples_with_new_seed_text(tiny_corpus_path, tmp_path):
    app = build(app_options(tiny_corpus_path, tmp_path / "run"))
    async with running_app(app) as pilot:
        await until_round(pilot, app)
        before = app.generation_pane.round
        # Posted, not pilot.press: that waits for the app to go idle, by when the short
        # resampled round has streamed to its end and the next epoch's has replaced it.
        from textual import events

        app.post_message(events.Key("s", "s"))
        # The resampled round takes over at once (weights copied on a thread); rounds of
        # epochs that end meanwhile wait behind it, so it is seen streaming.
        await wait_until(pilot, lambda: app.generation_pane.round.label == "resampled",
                         what="the resampled round")
        after = app.generation_pane.round
        assert after.number > before.number and after.seed != before.seed
        await wait_until(pilot, lambda: all(len(c.generated) > 0 for c in app.generation_pane.columns),
                         what="text in the columns")
        for column in app.generation_pane.columns:
            assert column.plain.startswith(after.seed) and len(column.plain) > len(after.seed)
        await quit_app(pilot, app)


@slow
@trains
async def test_p_pauses_and_resumes_training(tiny_corpus_path, tmp_path):
    app = build(app_options(tiny_corpus_path, tmp_path / "run"))
    async with running_app(app) as pilot:
        await wait_until(pilot, lambda: training(app, 2), what="training steps")
        # A key is answered while training: the event loop never waits on TensorFlow.
        # (Posted directly: pilot.press also waits for the app to go idle, which it never
        # does while progress messages stream in.)
        from textual import events

        started = time.monotonic()
        app.post_message(events.Key("k", "k"))
        await wait_until(pilot, lambda: app.generation_pane.colour, timeout=5, what="the key")
        assert time.monotonic() - started < 0.5
        await pilot.press("p")
        assert app.phase == "paused" and app.main.session.paused
        await pilot.pause(0.5)  # the batch in flight lands
        step = app.training_pane.progress.step
        await pilot.pause(1.0)
        assert app.training_pane.progress.step == step, "steps went on while paused"
        await pilot.press("p")
        assert app.phase == "training"
        await wait_until(pilot, lambda: app.training_pane.progress.step > step, what="steps after resume")
        await quit_app(pilot, app)


def sampling_app(**config):
    """The app on the saved run (sampling only): the keys that need no training are
    tested here, where no model has to be traced first."""
    config.setdefault("sample_length", 40)
    return build(app_options("tiny", "runs/tiny", no_train=True, config=tiny_train_config(**config)))


async def test_t_changes_the_number_of_columns(tmp_path):
    run = ScriptedRun(tmp_path)
    app = run.app
    async with running_app(app) as pilot:
        await run.begin(pilot)
        await until_round(pilot, app)
        await pilot.press("t")
        from tui.screens.prompt import PromptScreen

        assert isinstance(app.screen, PromptScreen)
        prompt = app.screen.query_one("Input")
        prompt.value = "0.5, lots"
        await pilot.press("enter")
        assert isinstance(app.screen, PromptScreen), "an invalid list must keep the dialog open"
        await wait_until(pilot, lambda: notified(app, "not a number", "error"), what="the refusal")
        prompt.value = "0.3, 0.9"
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(app.generation_pane.columns) == 2, what="two columns")
        assert [c.temperature for c in app.generation_pane.columns] == [0.3, 0.9]
        await until_round(pilot, app, after=1)
        assert all(len(c.generated) == 40 for c in app.generation_pane.columns)
        await quit_app(pilot, app)


async def test_e_pins_the_seed_text_and_refuses_unknown_chars(tmp_path):
    run = ScriptedRun(tmp_path)
    app = run.app
    async with running_app(app) as pilot:
        await run.begin(pilot)
        await until_round(pilot, app)
        await pilot.press("e")
        prompt = app.screen.query_one("TextArea")  # (a seed may span lines: ctrl+s applies)
        prompt.text = "the €uro ☃"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: notified(app, "€", "error") and notified(app, "☃", "error"),
                         what="the refusal naming the characters")
        prompt.text = "The will to power"
        await pilot.press("ctrl+s")
        await until_round(pilot, app, after=1)
        assert app.generation_pane.round.seed == "the will to power"
        assert all(c.plain.startswith("the will to power") for c in app.generation_pane.columns)
        await pilot.press("s")  # a random seed again
        await until_round(pilot, app, after=2)
        assert app.generation_pane.round.seed != "the will to power"
        await quit_app(pilot, app)


async def test_k_colours_characters_by_probability(tmp_path):
    run = ScriptedRun(tmp_path)
    app = run.app
    async with running_app(app) as pilot:
        await run.begin(pilot)
        await until_round(pilot, app)
        column = app.generation_pane.columns[0]
        plain_styles = {str(span.style) for span in column.styled_text.spans}
        await pilot.press("k")
        assert app.generation_pane.colour
        coloured = {str(span.style) for span in column.styled_text.spans}
        assert len(coloured) > len(plain_styles)
        await pilot.press("k")
        assert {str(span.style) for span in column.styled_text.spans} == plain_styles
        await quit_app(pilot, app)


async def test_x_exports_the_samples(tmp_path):
    run = ScriptedRun(tmp_path)
    app, run_dir = run.app, run.run_dir
    before = set(run_dir.glob("samples-*.txt"))
    async with running_app(app) as pilot:
        await run.begin(pilot)
        await until_round(pilot, app)
        await pilot.press("x")
        exports = set(run_dir.glob("samples-*.txt")) - before
        assert len(exports) == 1
        text = exports.pop().read_text(encoding="utf-8")
        for column in app.generation_pane.columns:
            assert column.plain in text
        assert not list(run_dir.glob(".*tmp*")), "the temporary file was left behind"
        await wait_until(pilot, lambda: notified(app, "samples-"), what="the path in a notification")
        await quit_app(pilot, app)


async def test_help_screen_lists_every_key_that_applies(tmp_path):
    from tui.app import KEYS
    from tui.screens.help import HelpScreen
    from tui.screens.run_keys import CAPABILITIES

    app = ScriptedRun(tmp_path, trains=False).app  # (as sampling only: no pause, retrain or corpus)
    async with running_app(app) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        shown = " ".join(str(row) for row in app.screen.key_rows)
        for key in KEYS:  # (sampling only: pause, retrain and corpus do not apply)
            assert (key.label in shown) == (key.action not in CAPABILITIES), key
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await quit_app(pilot, app)


async def test_command_palette_runs_actions(tmp_path):
    run = ScriptedRun(tmp_path)
    app = run.app
    async with running_app(app) as pilot:
        await run.begin(pilot)
        await until_round(pilot, app)
        number = app.generation_pane.round.number
        await pilot.press("ctrl+p")
        await pilot.press(*"resample")
        palette = app.screen
        await wait_until(pilot, lambda: palette.query_one("CommandList").option_count > 0,
                         what="the palette's hit")
        await pilot.press("enter")
        await until_round(pilot, app, after=number, what="a round from the palette")
        assert app.generation_pane.round.label == "resampled"
        await quit_app(pilot, app)


@slow
@trains
async def test_r_asks_then_retrains_from_step_zero(tiny_corpus_path, tmp_path):
    run_dir = tmp_path / "run"
    app = build(app_options(tiny_corpus_path, run_dir))
    async with running_app(app) as pilot:
        await wait_until(pilot, lambda: training(app, 10), what="10 steps")
        first = app.main.source
        await pilot.press("r")
        from tui.screens.confirm import ConfirmScreen

        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert app.main.source is first and app.phase == "training"
        await pilot.press("r", "y")
        await wait_until(pilot, lambda: app.main.source is not first and app.phase == "training",
                         what="the new run")
        assert app.main.session.request.fresh and first.done.is_set()
        assert app.main.progress.session_start_step == 0, "the new run starts from step 0"
        [aside] = run_dir.parent.glob("run.prev-*")  # the old run, checkpointed and kept whole
        assert (aside / "model.keras").is_file() and (aside / "config.json").is_file()
        await wait_until(pilot, lambda: notified(app, f"moved, whole, to {aside}"), what="where it went")
        await quit_app(pilot, app)


@slow
@trains
async def test_c_swaps_corpus_and_refuses_a_bad_one(tiny_corpus_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    (corpora / "zzother.txt").write_text(tiny_text(4000, seed=9), encoding="utf-8")
    (tmp_path / "broken.bin").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    monkeypatch.setenv("CHARLM_CORPORA", str(corpora))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-home"))
    app = build(app_options(tiny_corpus_path, tmp_path / "runs" / "tiny"))
    async with running_app(app) as pilot:
        await wait_until(pilot, lambda: training(app, 1), what="training")
        from tui.screens.corpus_picker import CorpusPicker

        await pilot.press("c")
        assert isinstance(app.screen, CorpusPicker)
        picker = app.screen
        picker.choose(str(tmp_path / "broken.bin"))  # what Enter on it in the file tree does
        await wait_until(pilot, lambda: not picker.busy, what="the refusal")
        assert app.screen is picker, "a refused corpus must keep the picker open"
        await wait_until(pilot, lambda: notified(app, "binary", "error"), what="the notification")
        assert app.focused is picker.query_one("#path"), "the path input has the focus"
        await pilot.press("tab", "end", "enter")  # the list, its last named corpus: corpora/zzother.txt
        await wait_until(pilot, lambda: app.header.info.corpus == "zzother" and training(app, 1),
                         what="training on the new corpus")
        assert app.main.session.run_dir.as_posix().endswith("runs/zzother")
        assert (tmp_path / "runs" / "tiny" / "model.keras").is_file()
        await quit_app(pilot, app)
    assert (tmp_path / "runs" / "zzother" / "model.keras").is_file()


# -- failures stay inside the app ----------------------------------------------------------------
@slow
@trains
async def test_locked_run_dir_is_reported_and_app_stays_usable(tiny_corpus_path, tmp_path):
    from engine.files.rundir import RunDir

    run_dir = tmp_path / "run"
    holder = RunDir(run_dir)
    holder.acquire()  # as another charlm-tui process would
    try:
        app = build(app_options(tiny_corpus_path, run_dir))
        async with running_app(app) as pilot:
            await wait_until(pilot, lambda: notified(app, "in use", "error"), what="the error")
            await pilot.press("question_mark")
            from tui.screens.help import HelpScreen

            assert isinstance(app.screen, HelpScreen)
            await pilot.press("escape")
            await quit_app(pilot, app)
        assert app.return_code == 0
    finally:
        holder.release()


@slow
@trains
async def test_bad_corpus_on_the_command_line_is_reported(tmp_path):
    missing = tmp_path / "nope.txt"
    app = build(app_options(missing, tmp_path / "run"))
    async with running_app(app) as pilot:
        await wait_until(pilot, lambda: notified(app, "nope.txt", "error"), what="the error")
        await quit_app(pilot, app)


# -- sampling only ------------------------------------------------------------------------------
@slow
@trains
async def test_no_train_opens_a_saved_run_and_only_samples(sample_workspace):
    workspace, corpus_path, run_dir = sample_workspace
    app = build(app_options("tiny", "runs/tiny", no_train=True,
                            config=tiny_train_config(sample_length=30)))
    async with running_app(app) as pilot:
        await until_round(pilot, app)
        assert app.phase == "sampling"
        assert app.main.check_action("toggle_pause", ()) is False
        assert app.main.check_action("retrain", ()) is False
        assert app.main.check_action("swap_corpus", ()) is False
        assert app.training_pane.progress.step == 100  # from metrics.jsonl
        # The memorization check of each column, against the training text (on this machine).
        await wait_until(pilot, lambda: all("copied" in c.note for c in app.generation_pane.columns),
                         what="the memorization check in the column titles")
        from engine.data.corpus import load_corpus
        from engine.modeling.novelty import index_for

        index = index_for(load_corpus(corpus_path, lowercase=True))
        for column in app.generation_pane.columns:
            assert column.note.startswith(f"{index.measure(column.generated).share:.0%} copied")
        number = app.generation_pane.round.number
        await pilot.press("s")
        await until_round(pilot, app, after=number)
        await quit_app(pilot, app)
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("samples-")) == \
        sorted(["config.json", "metrics.jsonl", "model.keras", "model.sampler.npz", "vocab.json"]), \
        "sampling only must not write to the run"


def test_tui_app_import_does_not_import_tensorflow():
    import subprocess

    code = ("import sys, tui.app; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras') or m in ('engine.run.training', 'engine.modeling.sampler',"
            " 'engine.modeling.model')];"
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_sample_column_wraps_incrementally_like_a_one_shot_wrap():
    """Streamed text is wrapped a piece at a time: whatever the chunking, the lines must be
    those of the whole text wrapped at once, none wider than the column."""
    import random

    from rich.cells import cell_len

    from tui.widgets.generation import SampleColumn

    rng = random.Random(5)
    alphabet = "abc de fghij klmnopqrstuvwxyz  .,\n" + "x" * 6 + "語"
    for _ in range(300):
        width = rng.randint(3, 30)
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 200)))
        column = SampleColumn(1.0)
        position = 0
        while position < len(text):
            piece = text[position:position + rng.randint(1, 6)]
            position += len(piece)
            column.append(list(piece), [0.5] * len(piece))
            lines = [line.plain for line in column.lines(width)]
            assert all(cell_len(line) <= width for line in lines), (width, text, lines)
        at_once = SampleColumn(1.0)
        at_once.append(list(text), [0.5] * len(text))
        assert lines == [line.plain for line in at_once.lines(width)], (width, text)
        assert "".join(lines).replace(" ", "") == text.replace("\n", "").replace(" ", "")


def test_the_sample_columns_wrap_words_as_rich_does():
    """The columns look like any wrapped text in the app: rich's word wrap (public
    `Text.wrap`), except that the spaces after a word cut over several lines stay on its
    last piece rather than starting a line of their own."""
    import random

    from rich.console import Console
    from rich.text import Text

    from tui.widgets.generation import SampleColumn

    def wrapped(text: str, width: int) -> list[str]:
        column = SampleColumn(1.0)
        column.append(list(text), [0.5] * len(text))
        return [line.plain for line in column.lines(width)]

    console = Console()
    rng = random.Random(7)
    words = ["a", "the", "will", "power", "nietzsche's", "語は", "x" * 12, ",", "."]
    for _ in range(200):
        width = rng.randint(12, 40)  # no word longer than a line
        text = "".join(rng.choice(words) + rng.choice([" ", " ", "  ", "\n"]) for _ in range(40))
        expected = [line.plain for line in Text(text).wrap(console, width, overflow="fold")]
        assert wrapped(text, width) == expected
    assert wrapped("abcdefghijk  xy", 4) == ["abcd", "efgh", "ijk ", "xy"]  # rich: "ijk ", " xy"
    assert wrapped("ab abcdefghij", 4) == ["ab ", "abcd", "efgh", "ij"]  # a long word starts a line


@slow
@trains
async def test_an_exception_in_the_ui_still_stops_the_trainer(tiny_corpus_path, tmp_path):
    """Asyncio waits for worker threads at exit: a trainer left running would keep the
    process alive, invisibly, until its last epoch."""
    run_dir = tmp_path / "run"
    app = build(app_options(tiny_corpus_path, run_dir))
    with pytest.raises(ZeroDivisionError):
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: training(app, 2), what="training steps")
            app.call_later(lambda: 1 / 0)
            await pilot.pause(0.5)
    assert app.main.source.done.is_set(), "the training thread is still running"
    assert (run_dir / "model.keras").is_file()


@slow
@trains
async def test_no_train_samples_from_the_checkpoint_asked_for(sample_workspace, tmp_path):
    import shutil

    import numpy as np

    from engine.files.rundir import RunDir
    from engine.modeling.model import build_model
    from engine.run.follow import open_run
    from tui.options import AppOptions

    workspace, corpus_path, run_dir = sample_workspace
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    run = RunDir(copy)
    build_model(len(run.load_vocab()), run.load_config()).save(copy / "model.best.keras")  # other weights
    app = build(AppOptions(corpus="tiny", run_dir=str(copy), mode="saved", checkpoint="best", seed=7,
                           sample_length=30))
    async with running_app(app) as pilot:
        await until_round(pilot, app)
        best, latest = open_run(copy, checkpoint="best").sampler, open_run(copy, checkpoint="latest").sampler
        shown = app.main.sampler.next_distribution("the will")
        assert np.allclose(shown, best.next_distribution("the will"))
        assert not np.allclose(shown, latest.next_distribution("the will"))
        await quit_app(pilot, app)
