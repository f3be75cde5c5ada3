"""The sampler: the book's functions, numerically safe, and the stateful sampler that
must agree with the saved Keras model."""

import numpy as np
import pytest

from engine.modeling.sampler import Sampler, filter_logits, reweight_distribution, sample


def book_reweight(original_distribution, temperature):
    distribution = np.log(original_distribution) / temperature
    distribution = np.exp(distribution)
    return distribution / np.sum(distribution)


@pytest.mark.parametrize("temperature", [0.2, 0.5, 1.0, 1.2])
def test_reweight_matches_the_book_where_the_book_is_defined(temperature):
    p = np.random.default_rng(0).dirichlet(np.ones(57))
    np.testing.assert_allclose(reweight_distribution(p, temperature), book_reweight(p, temperature),
                               rtol=1e-9)


def test_reweight_of_a_zero_probability_stays_zero_without_nan():
    p = np.array([0.0, 0.25, 0.75])
    with np.errstate(all="raise"):  # no divide-by-zero, no invalid value
        q = reweight_distribution(p, 0.5)
    assert q[0] == 0.0 and np.isclose(q.sum(), 1.0)
    assert q[2] / q[1] == pytest.approx((0.75 / 0.25) ** 2)


def entropy(q: np.ndarray) -> float:
    return -(q * np.log(q)).sum()


def test_low_temperatures_sharpen_and_high_temperatures_flatten():
    p = np.array([0.1, 0.2, 0.7])
    assert entropy(reweight_distribution(p, 0.2)) < entropy(p) < entropy(reweight_distribution(p, 1.2))


def test_temperature_zero_is_greedy():
    p = np.array([0.1, 0.6, 0.3])
    assert list(reweight_distribution(p, 0)) == [0.0, 1.0, 0.0]
    assert all(sample(p, 0) == 1 for _ in range(20))


def test_sample_follows_the_reweighted_distribution():
    rng = np.random.default_rng(1)
    p = np.array([0.2, 0.3, 0.5])
    draws = np.bincount([sample(p, 1.0, rng) for _ in range(20000)], minlength=3) / 20000
    np.testing.assert_allclose(draws, p, atol=0.02)


def test_top_k_and_top_p_keep_only_the_best_characters():
    logits = np.log(np.array([[0.05, 0.5, 0.15, 0.3]]))
    assert np.isfinite(filter_logits(logits, top_k=2)).tolist() == [[False, True, False, True]]
    # nucleus 0.7: 0.5 then 0.3 reach it; 0.15 and 0.05 go
    assert np.isfinite(filter_logits(logits, top_p=0.7)).tolist() == [[False, True, False, True]]
    assert np.isfinite(filter_logits(logits, top_p=0.4)).tolist() == [[False, True, False, False]]


@pytest.fixture(scope="module")
def random_model():
    """An untrained model with seeded random weights: enough to compare arithmetic."""
    from engine.modeling.model import build_model
    from tests.conftest import tiny_config

    config = tiny_config(units=12, layers=2)
    model = build_model(7, config)
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(0, 0.6, w.shape).astype("float32") for w in model.get_weights()])
    return model


@pytest.mark.parametrize("prefix", ["a", "abcabc", "gfedcba" * 9])
@pytest.mark.trains
def test_stateful_sampler_matches_the_keras_model(random_model, prefix):
    vocab = tuple("abcdefg")
    sampler = Sampler.from_keras_model(random_model, vocab)
    ids = np.array([[vocab.index(ch) for ch in prefix]], dtype="int32")
    keras_probs = random_model.predict(ids, verbose=0)[0][-1]
    np.testing.assert_allclose(sampler.next_distribution(prefix), keras_probs, atol=2e-6)


@pytest.mark.trains
def test_stream_advances_all_temperatures_together_and_is_reproducible(random_model):
    sampler = Sampler.from_keras_model(random_model, tuple("abcdefg"))
    first = sampler.generate("abc", [0.0, 0.5, 1.0, 1.2], 200, seed=7)
    again = sampler.generate("abc", [0.0, 0.5, 1.0, 1.2], 200, seed=7)
    other = sampler.generate("abc", [0.0, 0.5, 1.0, 1.2], 200, seed=8)
    assert first == again and first != other
    assert all(len(text) == 200 and set(text) <= set("abcdefg") for text in first.values())
    assert first[0.0] == other[0.0]  # greedy ignores the seed


@pytest.mark.trains
def test_stream_reports_the_model_probability_of_each_chosen_char(random_model):
    vocab = tuple("abcdefg")
    sampler = Sampler.from_keras_model(random_model, vocab)
    text = "cab"
    for chars, probs in sampler.stream("cab", [1.0], 5, seed=2):
        expected = sampler.next_distribution(text)[vocab.index(chars[0])]
        assert probs[0] == pytest.approx(expected, rel=1e-9)
        text += chars[0]


@pytest.mark.trains
def test_greedy_stream_follows_the_argmax_of_the_keras_model(random_model):
    vocab = tuple("abcdefg")
    sampler = Sampler.from_keras_model(random_model, vocab)
    text = "fed"
    generated = sampler.generate(text, [0.0], 6)[0.0]
    for ch in generated:
        probs = random_model.predict(np.array([[vocab.index(c) for c in text]]), verbose=0)[0][-1]
        assert vocab[int(np.argmax(probs))] == ch
        text += ch


@pytest.mark.trains
def test_seed_text_with_unknown_characters_is_refused_by_name(random_model):
    sampler = Sampler.from_keras_model(random_model, tuple("abcdefg"))
    with pytest.raises(ValueError, match="'z'"):
        sampler.generate("abz", [1.0], 3)
    with pytest.raises(ValueError, match="empty"):
        sampler.generate("", [1.0], 3)
    assert sampler.generate("ABC", [1.0], 3, seed=0)  # lower-cased like the corpus


def test_the_stream_keeps_each_steps_distribution_for_the_inspector():
    """What the inspector shows for a streamed character is the distribution it was drawn
    from: the sampler's own for the text before it, at T=1, for every temperature's row."""
    from tests.scripted import numpy_sampler

    sampler = numpy_sampler("the will to power, and the will to truth.\n", units=8, seed=4)
    temperatures = [0.2, 1.0, 1.2]
    kept: list = []
    texts = ["the w"] * len(temperatures)
    stream = sampler.stream("the w", temperatures, 30, seed=5, distributions=kept)
    for step, (chars, probs) in enumerate(stream):
        assert len(kept) == step + 1 and kept[step].shape == (len(temperatures), len(sampler.vocab))
        for row, char in enumerate(chars):
            np.testing.assert_allclose(kept[step][row], sampler.next_distribution(texts[row]), atol=1e-12)
            assert kept[step][row][sampler.vocab.index(char)] == pytest.approx(probs[row], rel=1e-12)
            texts[row] += char


@pytest.mark.parametrize("reading", [(6, 3), (16, 8), (4, 1)])
def test_a_stream_read_in_windows_draws_each_char_from_its_last_window_and_the_chars_since(reading):
    """With a reading (window, every), each character is drawn from exactly what a zero state
    that read the last `window` characters at the latest restart, and every character since,
    predicts: window to window + every - 1 characters, never the whole stream."""
    from tests.scripted import numpy_sampler

    window, every = reading
    carried = numpy_sampler("the will to power, and the will to truth.\n", units=8, seed=4)
    sampler = Sampler.from_weights(carried.vocab, carried.weights(), lowercase=carried.lowercase,
                                   reading=reading)
    temperatures = [0.5, 1.0]
    kept: list = []
    seed_text = "the will to power, and"
    texts = [seed_text] * len(temperatures)
    stream = sampler.stream(seed_text, temperatures, 40, seed=5, distributions=kept)
    for step, (chars, _) in enumerate(stream):
        context = window + step % every
        for row, char in enumerate(chars):
            np.testing.assert_allclose(kept[step][row], carried.next_distribution(texts[row][-context:]),
                                       atol=1e-12)
            drawn = sampler.drawn_from(seed_text, texts[row][len(seed_text):])  # what the inspector shows
            np.testing.assert_allclose(kept[step][row], drawn, atol=1e-12)
            texts[row] += char
    whole, last = carried.next_distribution(texts[0]), carried.next_distribution(texts[0][-window:])
    assert not np.allclose(whole, last), "from the whole stream it would differ: the test tells them apart"


def test_runs_read_their_stream_in_their_own_windows_and_the_book_carries_its_state():
    from engine.config import preset
    from engine.modeling.sampler import reading_for

    assert reading_for(preset("fast")) == (16, 8)
    assert reading_for(preset("fast", maxlen=160)) == (160, 80)
    assert reading_for(preset("book")) is None
    from tests.scripted import numpy_sampler

    carried = numpy_sampler("abc abc\n", units=4, seed=1)
    with pytest.raises(ValueError, match="at least 1"):
        Sampler.from_weights(carried.vocab, carried.weights(), reading=(16, 0))


def test_the_held_out_loss_as_the_sampler_reads_scores_each_char_from_its_reading():
    """as_read_loss: each character from the window + p % every characters before it, as a
    stream read in windows draws it; None for a sampler that carries its state."""
    from engine.modeling.longcontext import as_read_loss
    from tests.scripted import numpy_sampler

    text = "the will to power, and the will to truth.\n" * 3
    carried = numpy_sampler(text, units=8, seed=4)
    reading = Sampler.from_weights(carried.vocab, carried.weights(), lowercase=carried.lowercase,
                                   reading=(5, 3))
    ids = np.array(carried.encode(text))
    expected = [-np.log(carried.next_distribution(text[p - 5 - p % 3:p])[ids[p]]) for p in range(8, len(ids))]
    assert as_read_loss(reading, ids) == pytest.approx(np.mean(expected), rel=1e-12)
    assert as_read_loss(carried, ids) is None and as_read_loss(reading, ids[:8]) is None
