"""The epochs listed (the app's history table, watch, a resumed run's past): an epoch
stopped during its held-out scoring, or mid-way, is listed with its training loss; an
epoch stopped, resumed and finished is listed once. Real tiny training."""

from __future__ import annotations

import json

import pytest

from engine import events
from engine.run.follow import history
from engine.run.training import Trainer
from tests.conftest import tiny_config

pytestmark = pytest.mark.trains  # real tiny training


class StoppedWhileScoring(Trainer):
    """A user pressing q while the held-out text is scored."""

    def heldout_loss(self, stop=None):
        self.stop()
        return super().heldout_loss(stop=stop)


def epoch_rows(run_dir) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [row for row in map(json.loads, lines) if row["kind"] == "epoch"]


def test_an_epoch_stopped_during_its_held_out_scoring_is_listed(tiny_corpus, tmp_path):
    received = []
    trainer = StoppedWhileScoring(tiny_corpus, tiny_config(epochs=3), tmp_path / "run",
                                  on_event=received.append)
    finished = trainer.run()
    per_epoch = trainer.train_windows.batches_per_epoch
    assert finished.reason == "stopped" and finished.step == per_epoch
    listed = [event for event in received if isinstance(event, events.EpochEnd)]
    assert [(e.epoch, e.step, e.val_loss, e.complete) for e in listed] == [(1, per_epoch, None, True)]
    assert listed[0].train_loss > 0
    assert [(row["epoch"], row["step"], row["val_loss"]) for row in epoch_rows(tmp_path / "run")] == \
        [(1, per_epoch, None)]  # so watch and a resumed run list it too
    assert [(e.epoch, e.complete) for e in history(tmp_path / "run") if isinstance(e, events.EpochEnd)] == \
        [(1, True)]


def test_an_epoch_stopped_mid_way_is_listed_as_partial(tiny_corpus, tmp_path):
    received = []
    trainer = Trainer(tiny_corpus, tiny_config(epochs=3, log_every=1), tmp_path / "run")
    per_epoch = trainer.train_windows.batches_per_epoch

    def stop_mid_epoch(event):  # as q would, at the first progress report
        received.append(event)
        if isinstance(event, events.BatchProgress) and event.step < per_epoch and not trainer.stopping:
            trainer.stop()

    trainer.on_event = stop_mid_epoch
    finished = trainer.run()
    assert finished.reason == "stopped" and 0 < finished.step < per_epoch
    listed = [(e.epoch, e.step, e.val_loss, e.complete) for e in received if isinstance(e, events.EpochEnd)]
    assert listed == [(1, finished.step, None, False)]


def test_a_resumed_epoch_is_listed_once(tiny_corpus, tmp_path):
    from tui.widgets.training import EpochHistory

    run_dir = tmp_path / "run"
    first = Trainer(tiny_corpus, tiny_config(epochs=2, steps=3), run_dir).run()  # stops mid-epoch 1: "1*"
    assert first.reason == "steps"
    Trainer(tiny_corpus, tiny_config(epochs=2), run_dir).run()  # finishes epochs 1 and 2
    assert [(row["epoch"], row["step"] == 3) for row in epoch_rows(run_dir)][:2] == [(1, True), (1, False)]
    past = [e for e in history(run_dir) if isinstance(e, events.EpochEnd)]
    assert [(e.epoch, e.complete) for e in past] == [(1, True), (2, True)]
    table = EpochHistory()  # the app's table, fed the rows as a resumed run or a watcher is
    for row in epoch_rows(run_dir):
        table.add(row["epoch"], row["step"], row["train_loss"], row["val_loss"], row["step"] != 3)
    assert [(epoch, complete) for epoch, _, _, _, complete in table.rows] == [(1, True), (2, True)]
