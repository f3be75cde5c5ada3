"""Training with the state carried from batch to batch (engine/modeling/carried.py), on the
real model: a batch continues from exactly the state the last one ended with, and the
steps are the model's own optimizer's."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import tiny_config

pytestmark = pytest.mark.trains


def _cross_entropy(probs, targets) -> float:
    picked = np.take_along_axis(np.asarray(probs, dtype=np.float64), targets[..., None], axis=-1)
    return float(-np.log(picked).mean())


@pytest.fixture
def model_and_text():
    from engine.modeling.model import build_model

    model = build_model(12, tiny_config(units=8, layers=2))
    model.optimizer.learning_rate = 0.0  # the weights stay as they are: the losses can be compared
    text = np.random.default_rng(1).integers(0, 12, size=(4, 25)).astype(np.int32)
    return model, text


def test_a_batch_starts_from_the_state_the_last_one_ended_with(model_and_text):
    from engine.modeling.carried import CarriedStep

    model, text = model_and_text
    step = CarriedStep(model, streams=4, length=8)
    probs = model.predict_on_batch(text[:, :24])  # the whole row at once, from a zero state
    for k in range(3):
        x, y = text[:, 8 * k: 8 * k + 8], text[:, 8 * k + 1: 8 * k + 9]
        assert step(x, y) == pytest.approx(_cross_entropy(probs[:, 8 * k: 8 * k + 8], y), abs=1e-5)
    step.reset()  # a new pass: from zeros again
    x, y = text[:, 16:24], text[:, 17:25]
    assert step(x, y) == pytest.approx(_cross_entropy(model.predict_on_batch(x), y), abs=1e-5)


def test_the_steps_are_the_models_own(model_and_text):
    from engine.modeling.carried import CarriedStep

    model, text = model_and_text
    model.optimizer.learning_rate = 0.01
    before = [w.copy() for w in model.get_weights()]
    step = CarriedStep(model, streams=4, length=8)
    for k in range(3):
        step(text[:, 8 * k: 8 * k + 8], text[:, 8 * k + 1: 8 * k + 9])
    assert int(model.optimizer.iterations.numpy()) == 3  # the step count a resumed run goes by
    assert all(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_a_run_carries_its_state_from_carry_start_on_and_resumes_there(tiny_corpus, tmp_path):
    """Windows for the first half, then the state carried: the trainer says so once, the
    steps and epochs go on as they were, and a resumed run carries on carrying."""
    from engine import events
    from engine.data.windows import count_windows, split_point
    from engine.run.training import Trainer

    said = []

    def keep(event):
        if isinstance(event, events.Notice):
            said.append(event.message)
        elif isinstance(event, events.EpochEnd):
            said.append(f"epoch {event.epoch}")

    settings = dict(epochs=4, carry_start=0.5, carry_length=32, sample_length=0, patience=0)
    train_chars = split_point(len(tiny_corpus), 0.1)
    per_epoch = count_windows(train_chars, 16, 8) // 16  # tiny_config's windows and batches
    # Stopped 10 steps into its third epoch, which began past half its run (its --steps).
    first = Trainer(tiny_corpus, tiny_config(**settings, steps=2 * per_epoch + 10), tmp_path / "run",
                    on_event=keep)
    assert first.steps_per_epoch == per_epoch
    assert first.run().step == 2 * per_epoch + 10
    carrying = [i for i, line in enumerate(said) if "carried from batch to batch" in line]
    assert len(carrying) == 1 and said[carrying[0] - 1] == "epoch 2", said  # once, from then on

    said.clear()
    finished = Trainer(tiny_corpus, tiny_config(**settings), tmp_path / "run", on_event=keep).run()
    assert finished.reason == "epochs" and finished.step == 4 * per_epoch
    assert "carried from batch to batch" in said[0], said
