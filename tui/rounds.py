"""When a generation round starts, and from which seed text: the rules of the main
screen's rounds, as a plain class (no Textual, no TensorFlow) so that they are tested
in milliseconds (tests/test_rounds.py).

A round needs a sampler (a copy of the weights) and a seed text. Samplers arrive as the
run goes (each checkpoint brings one); a round still streaming is let finish unless the
user asked for the new one, and only the newest waiting sampler is kept. The first
round of a saved or followed run waits for its training text, the source of random
seed texts, when that text is still being looked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEED_CHARS = 60  # a random seed text: the book's window; the sampler reads any length


@dataclass(frozen=True)
class Offer:
    """A sampler for a new round, and why the round is started (its label)."""

    sampler: object  # engine.modeling.sampler.Sampler
    reason: str
    now: bool = False  # asked for by the user: replaces a round in progress


class Rounds:
    """The sampler of the rounds, the one waiting, the seed texts and the random numbers."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)
        self.reset(seed_corpus_known=True)

    def reset(self, seed_corpus_known: bool) -> None:
        """A new run: no sampler, no seed text yet."""
        self.sampler = None
        self.pending: Offer | None = None
        self.pinned_seed: str | None = None
        self.seed_corpus = None          # engine.data.corpus.Corpus of random seed texts, when at hand
        self.excerpts: list[str] = []    # else the excerpts saved with the run
        self.seed_corpus_known = seed_corpus_known  # whether looking for the training text has ended

    # -- which sampler, and when -------------------------------------------------------------------
    def offer(self, offer: Offer, streaming: bool) -> str | None:
        """A new sampler: the label of the round to start with it now, or None when it waits
        (for the training text, or behind the round `streaming`)."""
        if not self.seed_corpus_known:
            # The first round's seed text comes from the training text when it is on this
            # machine: wait for the answer (whichever comes first, the same round follows).
            self.pending = offer
            return None
        self.sampler = offer.sampler
        if streaming and not offer.now:
            # A new model while a round is still streaming: let it finish (it would never
            # be readable when epochs are short); the newest waiting round follows.
            self.pending = offer
            return None
        self.pending = None
        return offer.reason

    def seed_corpus_found(self, corpus, streaming: bool) -> str | None:
        """The training text (None: not on this machine) has been looked for: the label of
        the round held for it, to start now, or None."""
        self.seed_corpus, self.seed_corpus_known = corpus, True
        waiting, self.pending = self.pending, None
        if waiting is None or streaming:
            return None
        return self.offer(waiting, streaming)

    def round_finished(self) -> str | None:
        """A round has streamed to its end: the label of the waiting one to start, or None."""
        waiting, self.pending = self.pending, None
        if waiting is None:
            return None
        self.sampler = waiting.sampler
        return waiting.reason

    # -- seed texts --------------------------------------------------------------------------------
    def pin(self, seed_text: str | None) -> None:
        """Every round starts from `seed_text` (None: a random one each round)."""
        self.pinned_seed = seed_text

    def next_seed(self) -> tuple[str, int]:
        """(the seed text, the random seed) of the round about to start; the waiting round,
        if any, is dropped (this one is newer)."""
        self.pending = None
        return self.pinned_seed or self.random_seed_text(), self.random_seed()

    def random_seed(self) -> int:
        return int(self._rng.integers(2**31))

    def random_seed_text(self) -> str:
        """A window of the training text; else an excerpt saved with the run that the model
        can read; else a text the model writes from a random letter."""
        corpus = self.seed_corpus
        if corpus is not None and len(corpus) > 0:
            return corpus.random_text(SEED_CHARS, self._rng)
        usable = [e for e in self.excerpts if _encodable(self.sampler, e)]
        if usable:
            return usable[int(self._rng.integers(len(usable)))]
        vocab = self.sampler.vocab
        letters = [ch for ch in vocab if ch.isalpha()] or list(vocab)
        start = letters[int(self._rng.integers(len(letters)))]
        written = self.sampler.generate(start, [0.5], SEED_CHARS - 1, seed=self.random_seed())
        return start + written[0.5]


def _encodable(sampler, text: str) -> bool:
    try:
        sampler.encode(text)
    except ValueError:
        return False
    return True
