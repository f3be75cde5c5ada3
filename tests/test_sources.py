"""The two RunSources (tui/sources.py), without Textual or TensorFlow: what each allows,
when each starts a round, and the words of its status line, from real engine events
folded by the real reducer."""

from __future__ import annotations

from engine import events, progress
from engine.run.session import RunRequest
from tui.sources import FollowerSource, TrainingSource


def fold(*batch) -> progress.Progress:
    shown = progress.Progress()
    for event in batch:
        shown = progress.reduce(shown, event)
    return shown


def started(resumed_from_step: int = 0) -> events.TrainingStarted:
    return events.TrainingStarted("tiny", 6000, 30, 700, 630, 1234, "", "CPU", "runs/tiny",
                                  resumed_from_step, 1, 40, epochs=3)


def training(tmp_path) -> TrainingSource:
    request = RunRequest(corpus=str(tmp_path / "tiny.txt"), run_dir=str(tmp_path / "run"))
    return TrainingSource(request, print)


def test_a_trainer_can_pause_retrain_and_swap_a_follower_cannot(tmp_path):
    trainer = training(tmp_path)
    saved = FollowerSource(tmp_path / "run", print, follow=False)
    watched = FollowerSource(tmp_path / "run", print, follow=True)
    assert (trainer.can_pause, trainer.can_retrain, trainer.can_swap_corpus) == (True, True, True)
    for follower in (saved, watched):
        assert not (follower.can_pause or follower.can_retrain or follower.can_swap_corpus)
    assert saved.writes_run_dir and not watched.writes_run_dir, "a watcher never writes to the run"
    assert watched.goes_stale and not saved.goes_stale
    assert "trainer goes on" in watched.leaving and "checkpoint" in trainer.leaving
    assert not trainer.started and trainer.wait(0) and saved.wait(0), "not started: nothing to wait for"


def test_a_trainer_samples_as_training_starts_and_at_each_checkpoint(tmp_path):
    trainer = training(tmp_path)
    assert trainer.round_reason(started(), fold()) == "before training"
    assert trainer.round_reason(started(resumed_from_step=1200), fold()) == "resumed at step 1,200"
    at_epoch_end = fold(started(), events.BatchProgress(1, 40, 40, 40, 2.0, 1.0, 640, 1.0))
    checkpoint = events.CheckpointSaved("runs/tiny/model.keras", 40, 1)
    assert trainer.round_reason(checkpoint, at_epoch_end) == "after epoch 1"
    mid_epoch = fold(started(), events.BatchProgress(1, 12, 40, 12, 2.0, 1.0, 192, 1.0))
    assert trainer.round_reason(events.CheckpointSaved("m", 12, 1), mid_epoch) == "checkpoint at step 12"
    assert trainer.round_reason(events.EpochEnd(1, 40, 2.0, 2.1, 1.0), at_epoch_end) is None


def test_a_follower_samples_each_checkpoint_it_loads(tmp_path):
    checkpoint = events.CheckpointSaved("runs/tiny/model.keras", 1200, 3)
    saved = FollowerSource(tmp_path, print, follow=False)
    assert saved.round_reason(checkpoint, fold()) == "from the saved model"
    watched = FollowerSource(tmp_path, print, follow=True)
    assert watched.round_reason(checkpoint, fold()) == "checkpoint at step 1,200"
    assert watched.round_reason(started(), fold()) is None


def test_each_source_words_its_status(tmp_path):
    trainer = training(tmp_path)
    running = fold(started())
    assert trainer.status(fold(), False, "loading TensorFlow…", 0.0) == "loading TensorFlow…"
    assert trainer.status(running, True, "", 0.0) == "training"
    assert trainer.phase(running, True) == "training"
    saved = FollowerSource(tmp_path, print, follow=False)
    assert saved.phase(running, False) == "loading" and saved.phase(running, True) == "sampling"
    assert saved.status(running, True, "", 0.0) == "sampling only (--no-train)"
    watched = FollowerSource(tmp_path, print, follow=True)
    assert watched.status(running, True, "", 5.0) == "training in another process"
    assert watched.status(running, True, "", 95.0) == "no new metrics for 95 s"
    ended = fold(started(), events.TrainingFinished("time_budget", 1, 10, 2.0, None, 9.0, 1.0, "runs/tiny"))
    assert watched.status(ended, True, "", 0.0) == "the run ended: time budget reached"
