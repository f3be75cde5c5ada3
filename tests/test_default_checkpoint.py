"""Once a run has stopped, what reads it (sample, inspect, cells, the app's --no-train)
uses its best checkpoint unless told otherwise, and says so; while it trains, the newest."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import tiny_config
from tests.ptyrun import charlm_command

pytestmark = pytest.mark.trains  # trains a tiny model or loads one with Keras: `make test-fast` leaves it out


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A run trained for two epochs by the real trainer: it kept a best checkpoint."""
    from engine.data.corpus import load_corpus
    from engine.run.training import Trainer
    from tests.conftest import tiny_text

    folder = tmp_path_factory.mktemp("best")
    (folder / "tiny.txt").write_text(tiny_text(), encoding="utf-8")
    Trainer(load_corpus(folder / "tiny.txt"), tiny_config(epochs=2, sample_length=0), folder / "run").run()
    assert (folder / "run" / "model.best.keras").is_file()
    return folder / "run"


def test_a_stopped_run_is_read_from_its_best_checkpoint(stopped_run):
    from engine.run.follow import open_run

    saved = open_run(stopped_run)
    assert saved.choice == "best" and saved.checkpoint.path == stopped_run / "model.best.keras"
    assert open_run(stopped_run, checkpoint="latest").checkpoint.path == stopped_run / "model.keras"


def test_a_run_in_training_is_read_from_its_newest(stopped_run):
    from engine.files.checkpoints import in_training
    from engine.files.rundir import RunDir
    from engine.run.follow import open_run

    trainer_side = RunDir(stopped_run)
    trainer_side.acquire()  # what a training process holds
    try:
        assert in_training(RunDir(stopped_run))
        saved = open_run(stopped_run)
        assert saved.choice == "latest" and saved.checkpoint.path == stopped_run / "model.keras"
    finally:
        trainer_side.release()
    assert not in_training(RunDir(stopped_run))


def test_a_run_without_a_best_is_read_from_its_newest(stopped_run, tmp_path):
    import shutil

    from engine.files.checkpoints import default_checkpoint
    from engine.files.rundir import RunDir

    copy = tmp_path / "copy"
    shutil.copytree(stopped_run, copy)
    (copy / "model.best.keras").unlink()
    assert default_checkpoint(RunDir(copy)) == "latest"


def test_sample_says_it_used_the_best_checkpoint(stopped_run):
    out = subprocess.run([*charlm_command(), "sample", "--run", str(stopped_run), "--length", "5", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["checkpoint"] == str(stopped_run / "model.best.keras")
