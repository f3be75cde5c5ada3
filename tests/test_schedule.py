"""The learning-rate schedule: pure, then applied by the real trainer (tiny model)."""

from __future__ import annotations

import math

import pytest

from engine.config import TrainConfig, preset
from engine.run.schedule import fraction_done, learning_rate
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
    assert fraction_done(config, step=10**6, steps_per_epoch=100, session_steps=10**6, session_seconds=1e6) == 1.0


def test_runs_saved_before_schedules_resume_at_a_constant_rate():
    old = TrainConfig().to_json()
    del old["schedule"]
    assert TrainConfig.from_json(old).schedule == "constant"
    del old["decay_start"]  # a cosine run from before decay_start decayed from its start
    assert TrainConfig.from_json({**old, "schedule": "cosine"}).decay_start == 0.0


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
