"""The early stop: pure counting first, then the real trainer (tiny model) on a text it
can only memorise, where every epoch past the first few overfits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.config import TrainConfig, preset
from engine.run.patience import Patience
from tests.conftest import tiny_config


def test_only_epochs_without_a_new_best_late_in_the_run_count():
    patience = Patience(3)
    assert not patience.epoch_end(improved=False, late=False)  # the rate still high: not counted
    assert not patience.epoch_end(improved=False, late=False)
    assert not patience.past_best
    assert not patience.epoch_end(improved=False, late=True)
    assert not patience.epoch_end(improved=False, late=True)
    assert patience.past_best
    assert not patience.epoch_end(improved=True, late=True)  # a new best starts again
    assert not patience.past_best
    assert [patience.epoch_end(improved=False, late=True) for _ in range(3)] == [False, False, True]


def test_patience_0_never_stops_nor_sets_a_run_back():
    patience = Patience(0)
    assert not any(patience.epoch_end(improved=False, late=True) for _ in range(50))
    assert not patience.past_best


def test_the_book_has_no_early_stop_and_runs_saved_before_it_keep_none():
    assert preset("book").patience == 0
    assert preset("fast").patience == 3
    old = preset("fast").to_json()
    del old["patience"]
    assert TrainConfig.from_json(old).patience == 0


@pytest.mark.parametrize("value", [-1, 1.5, True, "3"])
def test_a_patience_that_is_not_a_whole_number_of_epochs_is_refused(value):
    with pytest.raises(ValueError, match="patience"):
        TrainConfig.from_json({**preset("fast").to_json(), "patience": value})


@pytest.fixture
def noise_corpus(tmp_path):
    """Random letters: nothing past their frequencies carries over to the held-out tail,
    so a model that learns more of the training text only memorises it."""
    from engine.data.corpus import load_corpus

    rng = np.random.default_rng(7)
    path = tmp_path / "noise.txt"
    path.write_text("".join(rng.choice(list("abcdefghijklmnop"), size=4000)), encoding="utf-8")
    return load_corpus(path)


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _weights(path):
    from engine.tfsetup import keras

    return keras().saving.load_model(path, safe_mode=True, compile=False).get_weights()


@pytest.mark.trains
def test_training_more_on_a_finished_run_ends_no_worse_than_it_began(noise_corpus, tmp_path):
    """The issue's case: a run trained to its end, then for many more epochs. The resumed
    session keeps the low rate it found, only overfits, stops after `patience` epochs
    without a new best, and ends with the best checkpoint's weights: in the model, in
    model.keras and in what it reports."""
    from engine.run.training import Trainer

    run = tmp_path / "run"
    settings = dict(units=32, lr=0.02, warmup_steps=4, sample_length=0, patience=3)
    first = Trainer(noise_corpus, tiny_config(epochs=4, **settings), run).run()
    assert first.reason in ("epochs", "no_improvement")
    began = json.loads((run / "state.json").read_text())["best_val_loss"]
    assert first.val_loss == pytest.approx(began, abs=1e-9)  # the first session ended at its best

    again = Trainer(noise_corpus, tiny_config(epochs=40, **settings), run)
    finished = again.run()
    assert finished.reason == "no_improvement", finished
    assert finished.epoch < 40
    best = json.loads((run / "state.json").read_text())["best_val_loss"]
    assert finished.val_loss == best <= began
    rows = [row for row in _metrics(run) if row["kind"] == "epoch" and row["step"] > first.step]
    assert len(rows) >= 3 and all(row["val_loss"] > best for row in rows[-3:])  # it had overfit
    for latest, kept in zip(_weights(run / "model.keras"), _weights(run / "model.best.keras"), strict=True):
        np.testing.assert_array_equal(latest, kept)
    assert again.heldout_loss() == pytest.approx(best, abs=1e-6)  # the weights it holds are the best's
    end = _metrics(run)[-1]
    assert end["kind"] == "end" and end["reason"] == "no_improvement" and end["val_loss"] == best


@pytest.mark.trains
def test_with_patience_0_the_run_trains_on_past_its_best(noise_corpus, tmp_path):
    from engine.run.training import Trainer

    run = tmp_path / "run"
    settings = dict(units=32, lr=0.02, warmup_steps=4, sample_length=0, patience=0)
    Trainer(noise_corpus, tiny_config(epochs=4, **settings), run).run()
    finished = Trainer(noise_corpus, tiny_config(epochs=12, **settings), run).run()
    assert finished.reason == "epochs" and finished.epoch == 12
    assert finished.val_loss > json.loads((run / "state.json").read_text())["best_val_loss"]


@pytest.mark.trains
def test_a_session_that_ends_past_its_best_ends_with_the_best_weights(noise_corpus, tmp_path):
    """Its epochs run out before its patience: it still ends at its best, and says so."""
    from engine import events
    from engine.run.training import Trainer

    run = tmp_path / "run"
    settings = dict(units=32, lr=0.02, warmup_steps=4, sample_length=0, patience=100)
    Trainer(noise_corpus, tiny_config(epochs=4, **settings), run).run()
    notices = []

    def keep_notices(event):
        if isinstance(event, events.Notice):
            notices.append(event.message)

    finished = Trainer(noise_corpus, tiny_config(epochs=12, **settings), run, on_event=keep_notices).run()
    best = json.loads((run / "state.json").read_text())["best_val_loss"]
    last = [row for row in _metrics(run) if row["kind"] == "epoch"][-1]
    assert finished.reason == "epochs" and last["val_loss"] > best  # it ended past its best ...
    assert finished.val_loss == best  # ... and with the best's weights
    assert any("ends with the weights of its best checkpoint" in notice for notice in notices), notices


@pytest.mark.trains
def test_a_fresh_run_is_not_stopped_while_its_rate_is_high(noise_corpus, tmp_path):
    """It overfits from its first epochs, but epoch ends count only once the cosine has
    brought the rate down to a quarter of its peak (from 85% of the run on: epoch 7 of 8)."""
    from engine.run.training import Trainer

    run = tmp_path / "run"
    config = tiny_config(epochs=8, units=32, lr=0.02, warmup_steps=4, sample_length=0, patience=1)
    finished = Trainer(noise_corpus, config, run).run()
    rows = [row for row in _metrics(run) if row["kind"] == "epoch"]
    best_early = min(row["val_loss"] for row in rows[:3])
    assert any(row["val_loss"] > best_early for row in rows[3:6])  # it had passed its best by then
    assert finished.epoch >= 7


def test_train_refuses_a_patience_below_0_in_one_line(tiny_corpus_path, tmp_path):
    from tests.runs import assert_one_line_refusal, charlm

    out = charlm("train", "--corpus", tiny_corpus_path, "--run", tmp_path / "run", "--patience", "-1")
    assert_one_line_refusal(out, "--patience must be a whole number of epochs")
    assert not (tmp_path / "run").exists()


@pytest.mark.trains
def test_train_more_on_the_command_line_says_it_stopped_at_its_best(noise_corpus, tmp_path):
    """The README's `train --run RUN --epochs N` on a finished run, as a user runs it."""
    from tests.runs import TINY, charlm

    run, corpus = tmp_path / "run", noise_corpus.source
    common = ("train", "--corpus", corpus, "--run", run, *TINY, "--units", "32", "--patience", "3",
              "--length", "0", "--json")
    assert charlm(*common, "--epochs", "4").returncode == 0
    began = json.loads((run / "state.json").read_text())["best_val_loss"]
    out = charlm(*common, "--epochs", "40")
    assert out.returncode == 0, out.stderr
    assert "Held-out loss stopped improving at the end of epoch" in out.stdout
    assert "stopped, with the weights of that best checkpoint" in out.stdout
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["reason"] == "no_improvement" and summary["val_loss"] <= began
