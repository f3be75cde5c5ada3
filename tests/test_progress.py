"""engine.progress: the one reducer from engine events to what the front ends show.

No TensorFlow: the events are made here, as the trainer (or watch, from metrics rows)
makes them, with the numbers of the issue (490 batches per epoch on nietzsche.txt).
"""

from __future__ import annotations

import pytest

from engine import events
from engine.progress import Progress, describe_position, format_duration, format_rate, reduce, replay

PER_EPOCH = 490
CHARS_PER_STEP = 128 * 40  # batch size x targets per window


def started(step: int = 0, *, epochs: int = 60, elapsed: float = 0.0, step_budget=None, time_budget=None,
            per_epoch: int = PER_EPOCH) -> events.TrainingStarted:
    return events.TrainingStarted(
        corpus_name="nietzsche", corpus_chars=600_893, vocab_size=57, windows_total=200_285,
        windows_train=62_712, parameters=200_000, model_summary="", device="CPU", run_dir="runs/x",
        resumed_from_step=step, epoch=step // per_epoch + 1, steps_per_epoch=per_epoch, epochs=epochs,
        step_budget=step_budget, time_budget=time_budget, elapsed=elapsed)


def batch(step: int, elapsed: float, *, chars_per_sec: float = 12_345.0, chars_per_step: int = CHARS_PER_STEP,
          per_epoch: int = PER_EPOCH) -> events.BatchProgress:
    epoch, done = divmod(step - 1, per_epoch)  # the batch that made `step` belongs to this epoch
    return events.BatchProgress(epoch=epoch + 1, batch=done + 1, batches_per_epoch=per_epoch, step=step,
                                loss=1.5, chars_per_sec=chars_per_sec, chars_seen=step * chars_per_step,
                                elapsed=elapsed)


def finished(reason: str, step: int, elapsed: float = 100.0) -> events.TrainingFinished:
    return events.TrainingFinished(reason=reason, epoch=step // PER_EPOCH, step=step, train_loss=1.4,
                                   val_loss=1.6, elapsed=elapsed, chars_per_sec=9_999.0, run_dir="runs/x")


def steady(first_step: int, seconds: int, *, start: float, steps_per_sec: int = 100, **batch_options):
    """BatchProgress once a second for `seconds` of training at a constant speed."""
    return [batch(first_step + steps_per_sec * i, start + i, **batch_options) for i in range(1, seconds + 1)]


# -- the three situations of the issue --------------------------------------------------------
def test_a_stop_between_throttled_events_shows_the_true_last_step():
    """The headless bar ended at 248/490 while the summary said 250 of 490."""
    for ending in ([events.EpochEnd(1, 250, 1.5, 1.6, 25.0, complete=False), finished("time_budget", 250)],
                   [events.CheckpointSaved("runs/x/model.keras", 250, 1), finished("stopped", 250)]):
        progress = replay([started(), batch(240, 24.0), batch(248, 24.8), *ending])
        assert (progress.epoch, progress.batch, progress.step) == (1, 250, 250)
        assert describe_position(progress) == "step 250 (epoch 1, 250 of 490 batches)"


def test_a_resumed_run_is_part_way_through_the_epoch_its_history_ended_early():
    """A resumed app showed epoch 8 at batch 447 while its history listed epoch 8 as finished."""
    step = 7 * PER_EPOCH + 447
    history = [events.EpochEnd(e, e * PER_EPOCH, 1.5, 1.6, 10.0 * e) for e in range(1, 8)]
    history.append(events.EpochEnd(8, step, 1.45, 1.55, 79.0, complete=False))  # a --steps stop
    after_history = replay(history, replay([started(per_epoch=PER_EPOCH)]))
    assert (after_history.epoch, after_history.batch) == (8, 447)

    resumed = reduce(after_history, started(step, elapsed=79.0))
    assert (resumed.state, resumed.epoch, resumed.batch, resumed.step) == ("running", 8, 447, step)
    assert resumed.val_loss == 1.55, "a resumed run keeps the losses its history ended with"
    assert describe_position(resumed) == "step 3,877 (epoch 8, 447 of 490 batches)"


def test_an_epoch_boundary_is_the_end_of_one_epoch_until_the_next_one_starts():
    ended = replay([started(), batch(PER_EPOCH, 49.0), events.EpochEnd(1, PER_EPOCH, 1.5, 1.6, 55.0)])
    assert (ended.epoch, ended.batch) == (1, PER_EPOCH)
    assert describe_position(ended) == "the end of epoch 1, step 490"
    resumed = reduce(ended, started(PER_EPOCH))
    assert (resumed.epoch, resumed.batch) == (2, 0)
    going_on = reduce(ended, batch(PER_EPOCH + 1, 56.0))
    assert (going_on.epoch, going_on.batch) == (2, 1)


def test_an_evaluation_pause_moves_the_eta_by_a_bounded_amount():
    """The ETA swung 15:31 -> 45:48 -> 23:12 within a minute, over each epoch's evaluation."""
    before = replay([started(), *steady(0, 120, start=0.0)])
    assert before.steps_per_sec == pytest.approx(100.0)
    assert before.eta == pytest.approx((60 * PER_EPOCH - 12_000) / 100.0)

    # 10 s evaluating after the last batch of epoch 25, then training goes on at the same speed.
    at_boundary = replay([batch(12_250, 122.5)], before)
    evaluated = reduce(at_boundary, events.EpochEnd(25, 12_250, 1.5, 1.6, 132.5))
    etas = [evaluated.eta] + [p.eta for p in _each(evaluated, steady(12_250, 90, start=132.5))]
    assert max(etas) < 1.5 * at_boundary.eta, "one evaluation must not make the ETA swing"
    assert etas[-1] == pytest.approx((60 * PER_EPOCH - 21_250) / 100.0, rel=0.02), "and it recovers"


def test_a_followed_run_measures_its_own_rate_and_honours_its_budgets():
    """watch's events come from metrics rows: chars_per_sec is 0 there, and rows are sparse."""
    rows = [batch(step, step / 50.0, chars_per_sec=0.0) for step in range(100, 1100, 100)]
    progress = replay([started(step_budget=1500, time_budget=60.0), *rows])
    assert progress.chars_per_sec == pytest.approx(50.0 * CHARS_PER_STEP)
    assert progress.eta == pytest.approx((1500 - 1000) / 50.0)
    assert replay([started(step_budget=1500, time_budget=25.0), *rows]).eta == pytest.approx(25.0 - 20.0)
    rows_without_chars = [batch(s, s / 50.0, chars_per_sec=0.0, chars_per_step=0)
                          for s in range(100, 1100, 100)]
    without_chars = replay([started(step_budget=2000), *rows_without_chars])
    assert without_chars.chars_per_sec == 0.0 and without_chars.chars_seen == 0
    assert without_chars.eta == pytest.approx((2000 - 1000) / 50.0)


# -- the ETA -----------------------------------------------------------------------------------
# A resumed session: from step 2,000 after 500 s, at 100 steps/s for 20 s, with 10 epochs of 1,000 steps.
def _eta_with(**limits) -> float | None:
    events_ = [started(2000, epochs=limits.pop("epochs", 0), elapsed=500.0, per_epoch=1000, **limits),
               *steady(2000, 20, start=500.0, per_epoch=1000)]
    return replay(events_).eta


def test_the_eta_honours_the_last_epoch_the_steps_and_the_time_budget_whichever_comes_first():
    assert _eta_with(epochs=10) == pytest.approx((10_000 - 4000) / 100)
    assert _eta_with(step_budget=3000) == pytest.approx((2000 + 3000 - 4000) / 100)
    assert _eta_with(time_budget=100.0) == pytest.approx(500 + 100 - 520)
    assert _eta_with(epochs=10, step_budget=3000, time_budget=100.0) == pytest.approx(10.0)
    assert _eta_with(epochs=10, step_budget=30_000, time_budget=25.0) == pytest.approx(5.0)
    assert _eta_with() is None, "no limit known: no ETA"


def test_the_eta_is_unknown_until_a_rate_is_measured_zero_when_finished_none_when_stopped():
    assert replay([started()]).eta is None
    assert replay([started(), batch(10, 1.0)]).eta is None, "one event is only a starting mark"
    running = replay([started(), batch(10, 1.0), batch(110, 2.0)])
    assert running.eta == pytest.approx((60 * PER_EPOCH - 110) / 100.0)
    assert reduce(running, finished("steps", 110)).eta == 0.0
    assert reduce(running, finished("stopped", 110)).eta is None
    assert reduce(running, events.TrainingFailed("the disk is full")).eta is None


# -- the state ---------------------------------------------------------------------------------
def test_state_follows_the_run():
    progress = Progress()
    assert progress.state == "starting"
    progress = reduce(progress, started())
    assert progress.state == "running"
    for state in ("paused", "running", "stopping"):
        progress = reduce(progress, events.StateChanged(state))
        assert progress.state == state
    stopped = reduce(progress, finished("stopped", 10))
    assert (stopped.state, stopped.finish_reason) == ("stopped", "stopped")
    assert reduce(stopped, events.StateChanged("running")) is stopped, "an ended run stays ended"
    for reason in ("epochs", "steps", "time_budget"):
        done = reduce(reduce(Progress(), started()), finished(reason, 10))
        assert (done.state, done.finish_reason) == ("finished", reason)
    assert reduce(reduce(Progress(), started()), events.TrainingFailed("no")).state == "failed"
    assert reduce(reduce(Progress(), events.StateChanged("paused")), started()).state == "paused"


def test_events_without_progress_leave_it_unchanged():
    progress = replay([started(), batch(10, 1.0)])
    for event in (events.Notice("hello"), events.SamplesGenerated(1, "seed", {0.5: "text"}), object()):
        assert reduce(progress, event) is progress


def test_a_late_event_never_moves_the_step_back():
    progress = replay([started(), batch(300, 3.0), events.CheckpointSaved("runs/x/model.keras", 250, 1)])
    assert (progress.step, progress.batch) == (300, 300)


# -- words ---------------------------------------------------------------------------------------
def test_the_formats_front_ends_print():
    assert [format_duration(s) for s in (None, -1, float("nan"), 0, 65.4, 3723, 360_000)] == \
        ["--:--", "--:--", "--:--", "0:00", "1:05", "1:02:03", "100h"]
    assert [format_rate(r) for r in (None, 0.0, 950.2, 12_345, 1.5e6, 2e9)] == \
        ["-", "-", "950", "12.3k", "1.5M", "2.0G"]
    assert describe_position(Progress(step=7)) == "step 7"


def _each(progress: Progress, stream) -> list[Progress]:
    """The progress after each event of `stream`."""
    seen = []
    for event in stream:
        progress = reduce(progress, event)
        seen.append(progress)
    return seen
