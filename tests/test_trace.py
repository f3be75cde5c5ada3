"""The LSTM trace and the next-character distribution (engine/modeling/trace.py, engine/modeling/nextchar.py),
exact against Keras's own per-step outputs of a real model built by engine.modeling.model."""

from __future__ import annotations

import numpy as np
import pytest

from engine.modeling.nextchar import NextChar, next_char
from engine.modeling.sampler import Sampler, reweight_distribution
from engine.modeling.trace import trace

VOCAB = tuple("abcdefG")
TEXT = "GfedcbaabcabcGGG" + "abcdefG" * 3  # case kept: G is not g


@pytest.fixture(scope="module")
def keras_model():
    """Two layers of 12 with seeded random weights, every position a target (so Keras
    returns the distribution after every character)."""
    from engine.modeling.model import build_model
    from tests.conftest import tiny_config

    model = build_model(len(VOCAB), tiny_config(units=12, layers=2, preset="fast"))
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(0, 0.6, w.shape).astype("float32") for w in model.get_weights()])
    return model


@pytest.fixture(scope="module")
def sampler(keras_model) -> Sampler:
    return Sampler.from_keras_model(keras_model, VOCAB, lowercase=False)


def ids_of(text: str) -> np.ndarray:
    return np.array([[VOCAB.index(char) for char in text]], dtype="int32")


def keras_cell_states(model, layer_name: str, inputs: np.ndarray) -> np.ndarray:
    """c after every step, from Keras's own LSTMCell stepped over `inputs` (steps, features)."""
    cell = model.get_layer(layer_name).cell
    h = c = np.zeros((1, cell.units), dtype="float32")
    states = []
    for step in inputs.astype("float32"):
        _, (h, c) = cell(step[None], [h, c])
        states.append(np.asarray(c)[0])
    return np.array(states)


@pytest.mark.trains
def test_the_trace_is_kerass_lstm_step_by_step(keras_model, sampler):
    from engine.tfsetup import keras

    traced = trace(sampler, TEXT)
    ids = ids_of(TEXT)
    layer_inputs = np.eye(len(VOCAB))[ids[0]]
    for number, layer in enumerate(traced.layers, 1):
        name = f"lstm_{number}"
        layer_model = keras().Model(keras_model.inputs, keras_model.get_layer(name).output)
        keras_h = layer_model.predict(ids, verbose=0)[0]
        np.testing.assert_allclose(layer.h, keras_h, atol=1e-5)
        np.testing.assert_allclose(layer.c, keras_cell_states(keras_model, name, layer_inputs), atol=1e-5)
        layer_inputs = keras_h
    np.testing.assert_allclose(traced.probabilities, keras_model.predict(ids, verbose=0)[0], atol=1e-5)


@pytest.mark.trains
def test_the_gates_are_the_ones_that_make_c_and_h(sampler):
    layer = trace(sampler, TEXT).layers[0]
    previous_c = np.vstack([np.zeros((1, layer.units)), layer.c[:-1]])
    np.testing.assert_allclose(layer.c, layer.f * previous_c + layer.i * layer.g, atol=1e-12)
    np.testing.assert_allclose(layer.h, layer.o * np.tanh(layer.c), atol=1e-12)
    np.testing.assert_array_equal(layer.tanh_c, np.tanh(layer.c))
    for gate in (layer.i, layer.f, layer.o):
        assert gate.min() > 0 and gate.max() < 1
    assert layer.g.min() > -1 and layer.g.max() < 1 and layer.g.min() < 0 < layer.g.max()
    assert layer.activation("c") is layer.tanh_c and layer.activation("h") is layer.h
    assert layer.activations == {"c": layer.tanh_c, "h": layer.h}
    with pytest.raises(ValueError, match="'c'"):
        layer.activation("x")


@pytest.mark.trains
def test_without_gates_or_distributions_the_states_are_the_same(sampler):
    full, light = trace(sampler, TEXT), trace(sampler, TEXT, gates=False, probabilities=False)
    assert light.probabilities is None and light.layers[0].i is None
    for a, b in zip(full.layers, light.layers):
        np.testing.assert_array_equal(a.c, b.c)
        np.testing.assert_array_equal(a.h, b.h)


@pytest.mark.trains
def test_each_steps_distribution_is_the_samplers_for_that_prefix(sampler):
    traced = trace(sampler, TEXT)
    for position in (1, 2, 7, len(TEXT)):
        from_trace = traced.next_char(position)
        assert from_trace.context == TEXT[:position]
        np.testing.assert_allclose(from_trace.probabilities, sampler.next_distribution(TEXT[:position]),
                                   rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="from 1 to"):
        traced.next_char(0)


@pytest.mark.trains
def test_next_char_is_kerass_predict_at_every_temperature(keras_model, sampler):
    distribution = next_char(sampler, TEXT)
    keras_probabilities = keras_model.predict(ids_of(TEXT), verbose=0)[0][-1].astype(np.float64)
    np.testing.assert_allclose(distribution.probabilities, keras_probabilities, atol=1e-5)
    for temperature in (0.2, 0.5, 1.2):
        np.testing.assert_allclose(distribution.at(temperature),
                                   reweight_distribution(keras_probabilities, temperature), atol=1e-5)
        assert distribution.at(temperature).sum() == pytest.approx(1.0)
    assert distribution.at(1.0) is distribution.probabilities


def test_top_entropy_and_rank_of_a_known_distribution():
    known = NextChar("ab", ("a", "b", "c", "d"), np.array([0.5, 0.25, 0.0, 0.25]))
    assert known.top(3) == [("a", 0.5), ("b", 0.25), ("d", 0.25)]  # a tie keeps the vocabulary's order
    assert known.top(10) == [("a", 0.5), ("b", 0.25), ("d", 0.25), ("c", 0.0)]
    assert known.entropy_bits() == pytest.approx(1.5)
    assert known.rank("a") == (1, 0.5) and known.rank("d") == (2, 0.25) and known.rank("c") == (4, 0.0)
    assert known.top(1, temperature=0) == [("a", 1.0)] and known.entropy_bits(0) == 0
    cold, hot = known.at(0.5), known.at(2.0)
    assert cold[0] > 0.5 > hot[0] and cold[2] == hot[2] == 0  # a ruled-out char stays out
    assert known.entropy_bits(0.5) < 1.5 < known.entropy_bits(2.0) <= 2


def test_text_is_read_as_the_model_reads_it():
    """A lower-cased run lower-cases what it reads; characters it does not know are refused."""
    rng = np.random.default_rng(0)
    weights = {"lstm_1_kernel": rng.normal(size=(3, 8)), "lstm_1_recurrent_kernel": rng.normal(size=(2, 8)),
               "lstm_1_bias": rng.normal(size=8), "dense_kernel": rng.normal(size=(2, 3)),
               "dense_bias": rng.normal(size=3)}
    lowercase = Sampler.from_weights(("a", "b", "c"), weights, lowercase=True)
    assert trace(lowercase, "AbC").text == "abc"
    assert next_char(lowercase, "AB").context == "ab"
    with pytest.raises(ValueError, match=r"^--text has characters the model does not know: '!', 'z'$"):
        next_char(lowercase, "abz!", what="--text")
    with pytest.raises(ValueError, match="^--text is empty"):
        next_char(lowercase, "", what="--text")
    with pytest.raises(ValueError, match="is empty"):
        trace(lowercase, "")
