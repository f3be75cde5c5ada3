"""The long-context held-out loss against a direct computation: the Keras model run over
each whole piece at once (every position sees everything before it, from a zero state)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.modeling.longcontext import long_context_loss, stream_pieces
from tests.conftest import tiny_config, tiny_text

pytestmark = pytest.mark.trains  # trains a tiny model or loads one with Keras: `make test-fast` leaves it out


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from engine.data.corpus import load_corpus
    from engine.modeling.model import build_model
    from engine.tfsetup import keras

    keras().utils.set_random_seed(3)
    path = tmp_path_factory.mktemp("long") / "tiny.txt"
    path.write_text(tiny_text(3000), encoding="utf-8")
    corpus = load_corpus(path, lowercase=False)
    model = build_model(len(corpus.vocab), tiny_config(units=6))
    return model, corpus


def keras_loss(model, pieces: np.ndarray, context: int) -> float:
    """Nats per character from the Keras model's outputs, scoring the characters that
    have at least `context` before them in their piece."""
    probabilities = np.asarray(model(pieces[:, :-1]), dtype=np.float64)  # (rows, T - 1, vocab)
    chosen = np.take_along_axis(probabilities, pieces[:, 1:, None], axis=-1)[..., 0]
    return float(-np.log(chosen[:, context - 1:]).mean())


def test_one_stream_scores_as_the_model_over_the_whole_text(tiny_model):
    from engine.modeling.sampler import Sampler

    model, corpus = tiny_model
    sampler = Sampler.from_keras_model(model, corpus.vocab, lowercase=False)
    ids = corpus.ids[:700]
    loss = long_context_loss(sampler, ids, context=200, streams=1)
    assert loss == pytest.approx(keras_loss(model, ids[None, :], 200), rel=1e-5)
    assert loss != pytest.approx(keras_loss(model, ids[None, :], 1), rel=1e-4)  # the context counts


def test_streams_are_consecutive_pieces_each_with_its_own_context(tiny_model):
    from engine.modeling.sampler import Sampler

    model, corpus = tiny_model
    sampler = Sampler.from_keras_model(model, corpus.vocab, lowercase=False)
    ids = corpus.ids[:2000]
    pieces = stream_pieces(ids, context=100, streams=4)
    assert pieces.shape == (4, 500) and (pieces.ravel() == ids).all()
    assert long_context_loss(sampler, ids, context=100, streams=4) == \
        pytest.approx(keras_loss(model, pieces, 100), rel=1e-5)
    assert stream_pieces(ids, context=300, streams=8).shape == (3, 666)  # each at least twice the context
    with pytest.raises(ValueError, match="too few"):
        stream_pieces(ids[:150], context=200)


def test_a_run_ends_with_its_long_context_figure(tmp_path):
    import json

    from engine.data.corpus import load_corpus
    from engine.run.training import Trainer

    (tmp_path / "tiny.txt").write_text(tiny_text(), encoding="utf-8")
    config = tiny_config(steps=10, sample_length=0)
    trainer = Trainer(load_corpus(tmp_path / "tiny.txt"), config, tmp_path / "run")
    finished = trainer.run()
    assert finished.long_context_loss == pytest.approx(long_context_loss(trainer.sampler(), trainer.val_ids))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["kind"] == "end" and rows[-1]["long_context_loss"] == finished.long_context_loss
