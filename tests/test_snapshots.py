"""Snapshot tests: the screens as SVG, compared with the ones in tests/__snapshots__/.

Deterministic by construction: sampling-only mode on a saved run with weights from a
seeded RNG and fixed metrics (tests/app_fixtures.py), a fixed sampler seed, a run
directory given relative to the working directory, the device always named CPU, and no
clock on screen. Update
with `pytest tests/test_snapshots.py --snapshot-update`, then look at the report.
"""

from __future__ import annotations

import time

import pytest

from tests.app_fixtures import *  # noqa: F401,F403 (fixtures)
from tests.app_fixtures import SNAPSHOT_SAMPLE_LENGTH, app_options, tiny_train_config

pytestmark = [pytest.mark.slow, pytest.mark.trains]  # (the saved run's model is built with Keras)


@pytest.fixture(autouse=True)
def same_device_everywhere(monkeypatch):
    """The header names the device: the screens must not change on a GPU box."""
    import engine.tfsetup

    monkeypatch.setattr(engine.tfsetup, "device_name", lambda: "CPU")


def snapshot_app():
    from tui.app import build_app

    config = tiny_train_config(sample_length=SNAPSHOT_SAMPLE_LENGTH)
    return build_app(app_options("tiny", "runs/tiny", no_train=True, config=config, seed=11))


async def settled(pilot) -> None:
    """Wait until the run is open, the round has streamed to its end and the plot is drawn."""
    from tui.widgets.training import LossPlot

    app = pilot.app
    deadline = time.monotonic() + 60
    while not (app.main is not None and app.main.is_mounted):
        await pilot.pause(0.05)
    while True:
        pane = app.generation_pane
        plot = app.training_pane.query_one(LossPlot)
        if pane.round is not None and pane.round.done and app.training_pane.drawn and plot.train.xs:
            break
        assert time.monotonic() < deadline, "the saved run did not open and stream in time"
        await pilot.pause(0.05)
    await app.workers.wait_for_complete()
    await pilot.pause(0.1)


def test_main_screen_80x24(snap_compare, sample_workspace):
    assert snap_compare(snapshot_app(), terminal_size=(80, 24), run_before=settled)


def test_main_screen_120x40(snap_compare, sample_workspace):
    assert snap_compare(snapshot_app(), terminal_size=(120, 40), run_before=settled)


def test_main_screen_coloured_by_probability_120x40(snap_compare, sample_workspace):
    assert snap_compare(snapshot_app(), press=["k"], terminal_size=(120, 40), run_before=settled)


def test_help_screen_80x24(snap_compare, sample_workspace):
    assert snap_compare(snapshot_app(), press=["question_mark"], terminal_size=(80, 24),
                        run_before=settled)


def test_corpus_picker_80x24(snap_compare, sample_workspace):
    async def open_picker(pilot) -> None:
        from pathlib import Path

        from tui.recent import add_recent
        from tui.screens.corpus_picker import CorpusPicker

        await settled(pilot)
        add_recent(str(Path.cwd() / "corpora" / "other.txt"))  # listed as corpora/other.txt
        # `c` is a training-mode key; the picker is pushed as `c` pushes it.
        await pilot.app.push_screen(CorpusPicker("tiny"))
        picker = pilot.app.screen
        tree = picker.query_one("#browser")
        # (not workers.wait_for_complete(): the DirectoryTree's loader never completes)
        deadline = time.monotonic() + 60
        while len(picker.infos) < len(picker.entries) + len(picker.recent) or not tree.root.children:
            assert time.monotonic() < deadline, "the picker did not measure its corpora in time"
            await pilot.pause(0.05)
        await pilot.pause(0.1)

    assert snap_compare(snapshot_app(), terminal_size=(80, 24), run_before=open_picker)
