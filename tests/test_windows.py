"""Lazy windows: the same windows and targets as the book, without materialising them."""

import numpy as np
import pytest

from engine.data import windows as windows_module
from engine.data.windows import Windows, count_windows, split_point


def book_windows(text, maxlen, step):
    sentences, next_chars = [], []
    for i in range(0, len(text) - maxlen, step):
        sentences.append(text[i:i + maxlen])
        next_chars.append(text[i + maxlen])
    return sentences, next_chars


def test_window_count_is_the_books():
    assert count_windows(600_894, 60, 3) == 200_278  # Nietzsche, as the book prints
    text = "abcdefghij" * 7
    assert count_windows(len(text), 8, 3) == len(book_windows(text, 8, 3)[0])


def test_last_objective_gives_the_books_windows_and_targets():
    text = "".join(chr(97 + (i * 7) % 26) for i in range(500))
    ids = np.frombuffer(text.encode(), dtype=np.uint8)
    sentences, next_chars = book_windows(text, 12, 3)
    w = Windows(ids, 12, 3, "last", batch_size=32, seed=5)
    seen = set()
    for b in range(w.batches_per_epoch):
        x, y = w.batch(0, b)
        for row, target, index in zip(x, y, w.window_indices(0, b)):
            assert bytes(row.astype(np.uint8)).decode() == sentences[index]
            assert chr(target) == next_chars[index]
            seen.add(int(index))
    assert len(seen) == w.batches_per_epoch * 32  # no window twice in an epoch


def test_all_objective_targets_every_next_char():
    ids = np.arange(100, dtype=np.uint8)
    x, y = Windows(ids, 10, 5, "all", batch_size=4, shuffle=False).batch(0, 1)
    np.testing.assert_array_equal(y, x + 1)
    assert x[0, 0] == 20  # unshuffled: windows in order, 5 apart


def test_held_out_scoring_masks_the_positions_without_enough_context():
    ids = np.arange(100, dtype=np.uint8)
    _, y = Windows(ids, 10, 4, "all", batch_size=4, shuffle=False, score_from=6).batch(0, 0)
    assert (y[:, :6] == -1).all() and (y[:, 6:] >= 0).all()


@pytest.mark.parametrize("limit", [10**9, 10])  # exact permutation, and the affine one
def test_each_epoch_visits_every_window_once_in_a_new_order(monkeypatch, limit):
    monkeypatch.setattr(windows_module, "EXACT_SHUFFLE_LIMIT", limit)
    w = Windows(np.zeros(1000, dtype=np.uint8), 10, 1, "last", batch_size=10, seed=1)
    orders = [np.concatenate([w.window_indices(e, b) for b in range(w.count // 10 + 1)]) for e in (0, 1)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(w.count))
    assert orders[0].tolist() != orders[1].tolist()


def test_an_epoch_is_reproducible_so_a_resumed_run_continues_where_it_stopped():
    ids = np.random.default_rng(0).integers(0, 50, 5000).astype(np.uint8)
    a = Windows(ids, 20, 3, "last", 16, seed=9)
    b = Windows(ids, 20, 3, "last", 16, seed=9)
    np.testing.assert_array_equal(a.batch(3, 7)[0], b.batch(3, 7)[0])


def test_memory_is_the_corpus_not_the_windows():
    ids = np.zeros(600_894, dtype=np.uint8)
    w = Windows(ids, 60, 3, "last", 128)
    x, _ = w.batch(0, 0)
    assert x.shape == (128, 60)
    # one shuffle order (8 bytes/window) and the ids: ~2 MB, where the book needs 685 MB
    order, _ = w._order(0)
    assert order.nbytes + ids.nbytes < 3_000_000


@pytest.mark.trains
def test_tf_dataset_yields_the_same_batches():
    ids = np.random.default_rng(0).integers(0, 30, 3000).astype(np.uint8)
    w = Windows(ids, 16, 4, "all", 8, seed=2)
    batches = list(w.dataset(epoch=1, first_batch=5, last_batch=8).as_numpy_iterator())
    assert len(batches) == 3
    np.testing.assert_array_equal(batches[0][0], w.batch(1, 5)[0])
    np.testing.assert_array_equal(batches[2][1], w.batch(1, 7)[1])


@pytest.mark.trains
def test_the_tf_dataset_is_not_autotuned():
    """Its tuning thread made an epoch's end wait ~5 s now and then, while the epoch's
    iterator was deleted (bench/ui_overhead.py): the pipeline's settings are fixed."""
    w = Windows(np.zeros(3000, dtype=np.uint8), 16, 4, "all", 8, seed=2)
    assert w.dataset(epoch=0).options().autotune.enabled is False


def test_split_point_holds_out_the_tail():
    assert split_point(1000, 0.1) == 900
