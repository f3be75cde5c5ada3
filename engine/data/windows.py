"""Training windows cut lazily from the encoded corpus.

The book materialises every window as one-hot arrays (685 MB for Nietzsche). Here a
window is just a start offset: batch `b` of epoch `e` is gathered from the integer
array on demand, so memory is O(corpus length) whatever the number of windows.
"""

from __future__ import annotations

import math

import numpy as np

from engine.config import TrainConfig
from engine.errors import CorpusError
from engine.tfsetup import tensorflow

# Above this many windows an exact shuffle would cost too much memory (4 bytes per
# window); an affine permutation i -> (a*i + c) mod n costs none and still spreads
# every batch over the whole corpus.
EXACT_SHUFFLE_LIMIT = 1 << 24


def count_windows(length: int, maxlen: int, step: int) -> int:
    """Windows the book cuts from `length` chars: range(0, length - maxlen, step)."""
    return len(range(0, length - maxlen, step))


class Windows:
    """Windows of `maxlen` ids every `step` chars, with their targets.

    objective "last": the target is the char after the window (the book).
    objective "all": the target of position t is the char at t+1 (every position).
    `score_from`: for held-out data, positions before it get target -1, so each
    held-out char is scored once and with enough context (see `engine.evaluate`).
    """

    def __init__(self, ids: np.ndarray, maxlen: int, step: int, objective: str,
                 batch_size: int, seed: int = 0, shuffle: bool = True, score_from: int = 0):
        self.ids = ids
        self.maxlen = maxlen
        self.step = step
        self.objective = objective
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.score_from = score_from
        self.count = count_windows(len(ids), maxlen, step)
        self._offsets = np.arange(maxlen, dtype=np.int64)
        self._order_cache: tuple[int, np.ndarray | None, tuple[int, int]] | None = None

    @property
    def batches_per_epoch(self) -> int:
        """Full batches only (a ragged last batch is dropped), but at least one."""
        return max(1, self.count // self.batch_size) if self.count else 0

    def _order(self, epoch: int) -> tuple[np.ndarray | None, tuple[int, int]]:
        """The epoch's shuffle: an explicit permutation, or affine (a, c) parameters."""
        if self._order_cache and self._order_cache[0] == epoch:
            return self._order_cache[1], self._order_cache[2]
        rng = np.random.default_rng([self.seed, epoch])
        if not self.shuffle:
            result = (None, (1, 0))
        elif self.count <= EXACT_SHUFFLE_LIMIT:
            result = (rng.permutation(self.count).astype(np.int64), (1, 0))
        else:
            a = int(rng.integers(1, self.count))
            while math.gcd(a, self.count) != 1:
                a += 1
            result = (None, (a, int(rng.integers(0, self.count))))
        self._order_cache = (epoch, *result)
        return result

    def window_indices(self, epoch: int, batch: int) -> np.ndarray:
        start = batch * self.batch_size
        stop = min(start + self.batch_size, self.count)
        positions = np.arange(start, stop, dtype=np.int64)
        permutation, (a, c) = self._order(epoch)
        if permutation is not None:
            return permutation[positions]
        return (a * positions + c) % self.count

    def batch(self, epoch: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) int32 arrays: x (B, maxlen); y (B,) for "last", (B, maxlen) for "all"."""
        starts = self.window_indices(epoch, batch) * self.step
        x = self.ids[starts[:, None] + self._offsets].astype(np.int32)
        if self.objective == "last":
            y = self.ids[starts + self.maxlen].astype(np.int32)
        else:
            y = self.ids[starts[:, None] + self._offsets + 1].astype(np.int32)
            if self.score_from:
                y[:, : self.score_from] = -1
        return x, y

    def dataset(self, epoch: int, first_batch: int = 0, last_batch: int | None = None):
        """A prefetching tf.data pipeline over batches [first_batch, last_batch) of `epoch`."""
        tf = tensorflow()
        last_batch = self.batches_per_epoch if last_batch is None else last_batch
        y_shape = (None,) if self.objective == "last" else (None, self.maxlen)

        # Nothing to convert: autograph would rewrite this function's source at every epoch
        # (0.3-0.5 s of the training thread's time at each epoch end).
        @tf.autograph.experimental.do_not_convert
        def gather(b):
            x, y = tf.numpy_function(lambda i: self.batch(epoch, int(i)), [b],
                                     (tf.int32, tf.int32), stateful=False)
            x.set_shape((None, self.maxlen))
            y.set_shape(y_shape)
            return x, y

        # No autotuning: the pipeline's parallelism and buffer are fixed, and its tuning
        # thread made the end of an epoch wait ~5 s now and then while the iterator was
        # deleted (seen in the app: bench/ui_overhead.py; the thread's wait is in
        # tf.data's UnboundedThreadPool, under RootDataset's iterator).
        options = tf.data.Options()
        options.autotune.enabled = False
        return (tf.data.Dataset.range(first_batch, last_batch)
                .map(gather, num_parallel_calls=1, deterministic=True)
                .prefetch(4)
                .with_options(options))


def split_point(length: int, val_fraction: float) -> int:
    """Index where the held-out tail begins (the last `val_fraction` of the corpus)."""
    return int(round(length * (1.0 - val_fraction)))


HELD_OUT_LINE_SEARCH = 1_000  # the held-out text starts at a line start found this far in


def held_out_text(corpus, val_fraction: float, chars: int) -> str:
    """The corpus's held-out tail (what training never fits), from its first line start
    (so that the position in the line is exact), `chars` characters at most."""
    start = split_point(len(corpus), val_fraction)
    head = corpus.text(start, start + HELD_OUT_LINE_SEARCH)
    if "\n" in head[:-1]:
        start += head.index("\n") + 1
    return corpus.text(start, start + chars)


def check_length(corpus, config: TrainConfig) -> None:
    """Refuse a corpus too short for one training and one held-out window."""
    split = split_point(len(corpus), config.val_fraction)
    needed = config.maxlen + 1
    if split < needed or len(corpus) - split < needed:
        raise CorpusError(
            f"{corpus.name} has {len(corpus):,} characters: too short for {config.maxlen}-char "
            f"windows with {config.val_fraction:.0%} held out (needs at least "
            f"{math.ceil(needed / config.val_fraction):,}); use a longer text or a smaller --maxlen")
