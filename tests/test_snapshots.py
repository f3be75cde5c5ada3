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
from tests.app_fixtures import saved_app, settled

pytestmark = [pytest.mark.slow, pytest.mark.trains,  # (the saved run's model is built with Keras)
              pytest.mark.usefixtures("same_device_everywhere")]


def test_main_screen_80x24(snap_compare, sample_workspace):
    assert snap_compare(saved_app(), terminal_size=(80, 24), run_before=settled)


def test_main_screen_120x40(snap_compare, sample_workspace):
    assert snap_compare(saved_app(), terminal_size=(120, 40), run_before=settled)


def test_main_screen_coloured_by_probability_120x40(snap_compare, sample_workspace):
    assert snap_compare(saved_app(), press=["k"], terminal_size=(120, 40), run_before=settled)


def test_help_screen_80x24(snap_compare, sample_workspace):
    assert snap_compare(saved_app(), press=["question_mark"], terminal_size=(80, 24),
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

    assert snap_compare(saved_app(), terminal_size=(80, 24), run_before=open_picker)
