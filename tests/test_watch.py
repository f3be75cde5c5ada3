"""`charlm-tui watch DIR`: watchers follow a run that a real headless trainer (another
process) is training, load its checkpoints, sample from them, and write nothing."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.app_fixtures import running_app, wait_until
from tests.conftest import tiny_text

slow = pytest.mark.slow

# Everything the trainer itself may leave in its run directory.
TRAINER_FILES = {".lock", "config.json", "vocab.json", "metrics.jsonl", "state.json",
                 "model.keras", "model.prev.keras", "model.sampler.npz", "model.prev.sampler.npz",
                 "model.best.keras", "model.best.sampler.npz"}


def foreign_files(run_dir: Path, trainer_pid: int | None = None) -> set[str]:
    """Names the trainer does not write (its temporaries .model-*.tmp* and, while it
    runs, .NAME.tmp-PID with its pid are its own; the watcher's pid is this process's)."""
    own = f".tmp-{trainer_pid}" if trainer_pid else None
    return {p.name for p in run_dir.iterdir()
            if p.name not in TRAINER_FILES and not p.name.startswith(".model-")
            and not (own and p.name.endswith(own))}


def snapshot(run_dir: Path) -> dict[str, tuple[str, int]]:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(run_dir.iterdir())}


def watch_app(run_dir: Path):
    from tui.app import build_app
    from tui.options import AppOptions

    return build_app(AppOptions(corpus="tiny", run_dir=str(run_dir), mode="watch", sample_length=60, seed=5))


def plot_steps(app) -> list[float]:
    from tui.widgets.training import LossPlot

    return list(app.training_pane.query_one(LossPlot).train.xs)


def columns_filled(app) -> bool:
    pane = app.generation_pane
    return (pane.round is not None and pane.round.done
            and all(len(c.generated) > 0 for c in pane.columns))


async def quit_app(pilot, app):
    await pilot.press("q")
    await wait_until(pilot, lambda: app.return_code is not None or not app.is_running, what="exit",
                     timeout=30)


def test_watch_refuses_a_directory_that_is_not_a_run(tmp_path):
    from tui.cli import main

    assert main(["watch", str(tmp_path)]) == 1
    assert main(["watch", str(tmp_path / "missing")]) == 1


@slow
async def test_watchers_follow_a_training_process_without_writing(tmp_path, monkeypatch):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(tiny_text(12000, seed=2), encoding="utf-8")
    run_dir = tmp_path / "run"
    exports = tmp_path / "exports"
    exports.mkdir()
    monkeypatch.chdir(exports)
    trainer = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "train", "--corpus", str(corpus), "--run", str(run_dir),
         "--units", "8", "--maxlen", "16", "--step", "8", "--batch-size", "16", "--epochs", "3",
         "--length", "0", "--checkpoint-every", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        deadline = time.monotonic() + 60
        metrics = run_dir / "metrics.jsonl"
        while not (metrics.exists() and '"interval"' in metrics.read_text()):  # a point to plot
            assert trainer.poll() is None, trainer.communicate()
            assert time.monotonic() < deadline, "the trainer did not write metrics"
            time.sleep(0.05)
        # Frozen until the watcher has read its first rows: the tiny run could otherwise
        # finish before a slow-starting watcher sees it move.
        trainer.send_signal(signal.SIGSTOP)

        # Watcher 1, while the trainer trains: steps grow, a checkpoint loads, columns fill.
        app = watch_app(run_dir)
        async with running_app(app) as pilot:
            await wait_until(pilot, lambda: len(plot_steps(app)) >= 1, timeout=60, what="first metrics")
            first = app.training_pane.progress.step
            trainer.send_signal(signal.SIGCONT)
            assert app.header.info.corpus == "tiny" and app.header.info.units == 8
            assert "watching" in app.header.render().plain
            await wait_until(pilot, lambda: app.training_pane.progress.step > first, timeout=60,
                             what="steps increasing as metrics.jsonl grows")
            # an epoch row can move the step before the next interval row adds a point
            await wait_until(pilot, lambda: len(plot_steps(app)) >= 2, timeout=60, what="a second plot point")
            assert plot_steps(app) == sorted(plot_steps(app))
            await wait_until(pilot, lambda: app.main.source.checkpoints_loaded >= 1 and columns_filled(app),
                             timeout=60, what="a checkpoint loaded and sampled")
            assert not app.main.check_action("toggle_pause", ()) and not app.main.check_action("retrain", ())
            assert app.main.check_action("resample", ())
            await pilot.press("x")  # exported to the current directory, not the run
            await wait_until(pilot, lambda: any(exports.glob("samples-*.txt")), timeout=10, what="export")
            assert foreign_files(run_dir, trainer.pid) == set()
            await quit_app(pilot, app)
        assert app.return_code == 0
        assert trainer.poll() is None or trainer.returncode == 0  # not disturbed

        stdout, stderr = trainer.communicate(timeout=120)
        assert trainer.returncode == 0, stderr
    finally:
        if trainer.poll() is None:
            trainer.send_signal(signal.SIGCONT)
            trainer.kill()
            trainer.wait()

    # Watcher 2, on the finished run: sees it finished, samples, and changes nothing at all.
    before = snapshot(run_dir)
    app = watch_app(run_dir)
    async with running_app(app) as pilot:
        await wait_until(pilot, lambda: app.phase == "finished", timeout=30, what="the finished run")
        state = app.training_pane.progress
        assert state.epoch == 3 and state.batches_per_epoch and state.batch == state.batches_per_epoch
        assert state.chars_per_sec > 0 and state.elapsed
        await wait_until(pilot, lambda: columns_filled(app), timeout=60, what="samples from the checkpoint")
        await quit_app(pilot, app)
    assert snapshot(run_dir) == before
    assert foreign_files(run_dir) == set()
