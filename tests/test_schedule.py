"""The learning-rate schedule: pure, then applied by the real trainer (tiny model)."""

from __future__ import annotations

import math

import pytest

from engine.config import TrainConfig, preset
from engine.run.schedule import Resumed, fraction_done, learning_rate, planned_rate
from tests.conftest import tiny_config


def test_the_book_keeps_its_constant_rate():
    book = preset("book")
    assert book.schedule == "constant"
    assert learning_rate(book, 0, 0.0) == learning_rate(book, 10_000, 1.0) == 0.01


def test_cosine_warms_up_then_decays_to_the_floor_at_the_end_of_the_run():
    config = preset("fast", lr=0.01, warmup_steps=100, lr_floor=0.1, decay_start=0.0)
    assert learning_rate(config, 0, 0.0) == pytest.approx(0.0001)
    assert learning_rate(config, 99, 0.0) == pytest.approx(0.01)
    assert learning_rate(config, 5000, 0.5) == pytest.approx(0.01 * (0.1 + 0.9 * 0.5))
    assert learning_rate(config, 9999, 1.0) == pytest.approx(0.001)
    rates = [learning_rate(config, 200 + i, i / 100) for i in range(101)]
    assert all(a >= b for a, b in zip(rates, rates[1:])), "decays monotonically after the warm-up"


def test_the_rate_holds_until_the_decay_starts():
    config = preset("fast", lr=0.01, warmup_steps=10, lr_floor=0.1, decay_start=0.6)
    assert learning_rate(config, 500, 0.3) == learning_rate(config, 500, 0.6) == pytest.approx(0.01)
    assert learning_rate(config, 500, 0.8) == pytest.approx(0.01 * (0.1 + 0.9 * 0.5))  # halfway down
    assert learning_rate(config, 500, 1.0) == pytest.approx(0.001)
    with pytest.raises(ValueError, match="decay_start"):
        preset("fast", decay_start=1.0).validate()


def test_the_run_ends_at_the_first_of_its_limits():
    config = preset("fast", epochs=10, steps=500, time_budget=60.0)
    assert fraction_done(config, step=100, steps_per_epoch=100, session_steps=100, session_seconds=6.0) \
        == pytest.approx(0.2)                   # --steps comes first: 100 of 500
    assert fraction_done(config, step=100, steps_per_epoch=100, session_steps=100, session_seconds=30.0) \
        == pytest.approx(0.5)                   # the time budget comes first
    assert fraction_done(preset("fast", epochs=4), step=300, steps_per_epoch=100, session_steps=50,
                         session_seconds=1.0) == pytest.approx(0.75)   # the epochs count the whole run
    assert fraction_done(config, step=10**6, steps_per_epoch=100, session_steps=10**6,
                         session_seconds=1e6) == 1.0


def test_runs_saved_before_schedules_resume_at_a_constant_rate():
    old = TrainConfig().to_json()
    del old["schedule"]
    assert TrainConfig.from_json(old).schedule == "constant"
    del old["decay_start"]  # a cosine run from before decay_start decayed from its start
    assert TrainConfig.from_json({**old, "schedule": "cosine"}).decay_start == 0.0


@pytest.mark.trains
def test_the_trainer_decays_the_rate_over_its_steps(tiny_corpus, tmp_path):
    from engine.run.training import Trainer

    config = tiny_config(epochs=1, steps=40, lr=0.01, warmup_steps=4, lr_floor=0.1, sample_length=0)
    trainer = Trainer(tiny_corpus, config, tmp_path / "run")
    finished = trainer.run()
    assert finished.reason == "steps"
    optimizer = trainer.model.optimizer
    rate = float(optimizer.learning_rate.numpy())
    expected = learning_rate(config, 40, 1.0)
    assert math.isclose(rate, expected, rel_tol=1e-4), (rate, expected)


def test_a_resumed_session_never_raises_the_rate_it_finds():
    config = preset("fast", lr=0.01, warmup_steps=10, lr_floor=0.1, decay_start=0.5, epochs=10,
                    time_budget=120.0)
    # The last session ended at its own budget, decayed to the floor, at 20% of the epochs:
    # the plan would go back to the peak; the session plans its own decay from the floor.
    ended = Resumed(step=2000, fraction=0.2, rate=0.001)
    assert planned_rate(config, 2000, 0.2) == pytest.approx(0.01)
    assert not ended.follows_plan(config)
    rates = [learning_rate(config, 2000 + i, 0.2 + 0.8 * i / 100, ended) for i in range(101)]
    assert max(rates) <= 0.001 and rates[-1] == pytest.approx(0.001)
    # ... and from a rate above the floor, decays from it to the floor at the session's end.
    halfway = Resumed(step=2000, fraction=0.2, rate=0.004)
    assert learning_rate(config, 2000, 0.2, halfway) == pytest.approx(0.004)
    assert learning_rate(config, 2500, 0.6, halfway) == pytest.approx(0.001 + 0.003 * 0.5)
    assert learning_rate(config, 3000, 1.0, halfway) == pytest.approx(0.001)


def test_a_resumed_session_goes_on_with_the_plan_where_it_does_not_raise_the_rate():
    config = preset("fast", lr=0.01, warmup_steps=100, lr_floor=0.1, decay_start=0.5)
    stopped_at_peak = Resumed(step=500, fraction=0.1, rate=0.01)
    assert stopped_at_peak.follows_plan(config)
    assert learning_rate(config, 600, 0.4, stopped_at_peak) == planned_rate(config, 600, 0.4) == 0.01
    warming_up = Resumed(step=40, fraction=0.01, rate=planned_rate(config, 37, 0.01), lag=4)  # set 3 before
    assert warming_up.follows_plan(config)
    assert learning_rate(config, 99, 0.02, warming_up) == pytest.approx(0.01)
    ended_warming_up = Resumed(step=40, fraction=0.01, rate=0.001 * 41 / 100, lag=4)  # --steps 40 decayed
    assert not ended_warming_up.follows_plan(config)
    assert learning_rate(config, 99, 0.02, ended_warming_up) <= 0.001 * 41 / 100
    decaying = Resumed(step=8000, fraction=0.8, rate=planned_rate(config, 7996, 0.7996))
    assert decaying.follows_plan(config)


def test_the_book_resumes_at_its_constant_rate():
    book = preset("book")
    assert learning_rate(book, 5000, 0.5, Resumed(step=4000, fraction=0.4, rate=0.001)) == 0.01


@pytest.mark.trains
def test_training_more_starts_from_the_rate_the_run_ended_at(tiny_corpus, tmp_path):
    """A real resumed run: the first session decays to the floor at its --steps; the second,
    stopped a few steps in (where the plan, by epochs, would be back at its peak), is at
    or below the rate the checkpoint held, and so ends at it."""
    from engine import events
    from engine.run.training import Trainer

    settings = dict(epochs=50, lr=0.01, warmup_steps=4, lr_floor=0.1, sample_length=0)
    first = tiny_config(steps=24, **settings)
    assert Trainer(tiny_corpus, first, tmp_path / "run").run().reason == "steps"
    floor = learning_rate(first, 24, 1.0)
    assert floor == pytest.approx(0.001)

    def stop_a_few_steps_in(event):
        if isinstance(event, events.BatchProgress) and event.step >= 24 + 9:
            again.stop()

    again = Trainer(tiny_corpus, tiny_config(steps=60, **settings), tmp_path / "run",
                    on_event=stop_a_few_steps_in)
    finished = again.run()
    assert finished.reason == "stopped" and 24 + 9 <= finished.step < 24 + 60
    fraction = fraction_done(again.config, step=finished.step,
                             steps_per_epoch=again.train_windows.batches_per_epoch,
                             session_steps=finished.step - 24, session_seconds=0.0)
    assert planned_rate(again.config, finished.step, fraction) == pytest.approx(0.01)  # what it was before
    rate = float(again.model.optimizer.learning_rate.numpy())
    assert rate <= floor * (1 + 1e-4), (rate, floor)
