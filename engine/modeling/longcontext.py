"""The held-out loss with long context: every scored character predicted from at least
`context` characters before it, the LSTM's state carried all the way, as the sampler
carries it while it streams.

The training-time figure (engine.modeling.model.heldout_loss) scores windows of 50-60 characters
from a zero state: it says how well a model predicts from a short past, the lengths it
was trained on. This one says what a long stream gets: below the windowed figure when
the model uses what lies further back (where a line ends, an open quote), above it when
state run far past its training lengths drifts. The held-out text is cut into
`streams` consecutive pieces scored side by side (one numpy batch); the first `context`
characters of each only warm its state up.
"""

from __future__ import annotations

import numpy as np

LONG_CONTEXT = 200  # characters of context before the first scored one
STREAMS = 32        # pieces scored side by side: few enough that warm-ups cost little


def stream_pieces(ids, context: int = LONG_CONTEXT, streams: int = STREAMS) -> np.ndarray:
    """`ids` cut into at most `streams` consecutive rows of equal length (streams x T), each
    with at least `context` characters before its first scored one (the rest dropped)."""
    ids = np.asarray(ids)
    streams = max(1, min(streams, len(ids) // (2 * (context + 1)) or 1))
    length = len(ids) // streams
    if length <= context + 1:
        raise ValueError(f"{len(ids):,} characters are too few to score with {context} characters of context")
    return ids[: streams * length].reshape(streams, length)


def long_context_loss(sampler, ids, context: int = LONG_CONTEXT, streams: int = STREAMS) -> float:
    """Mean nats per character of `ids` under `sampler` (engine.modeling.sampler.Sampler), each scored
    character predicted from at least `context` before it, the state carried."""
    scores = sampler.log_likelihoods(stream_pieces(ids, context, streams))
    return float(-scores[:, context - 1:].mean())  # column t: the character after t + 1 read


def long_context_loss_if_long_enough(sampler, ids) -> float | None:
    """long_context_loss, or None where the held-out text is too short for its context."""
    try:
        return long_context_loss(sampler, ids)
    except ValueError:
        return None


def window_scores(sampler, ids, positions, reads) -> np.ndarray:
    """Nats for each character ids[p] of `positions`, predicted from a zero state over the
    `reads` characters before it (one length for all, or one per position)."""
    ids, positions = np.asarray(ids), np.asarray(positions)
    reads = np.broadcast_to(np.asarray(reads), positions.shape)
    scores = np.empty(len(positions))
    for length in np.unique(reads):
        chosen = np.flatnonzero(reads == length)
        rows = ids[positions[chosen, None] + np.arange(-length, 1)]  # each: what is read, then it
        scores[chosen] = -sampler.log_likelihoods(rows)[:, -1]
    return scores


def as_read_loss(sampler, ids) -> float | None:
    """Mean nats per character of `ids` as `sampler` reads the stream it generates (its
    `reading`, engine.modeling.sampler.reading_for): the character at position p predicted
    from a zero state over the `window + p % every` characters before it, as a stream
    restarted every `every` characters from its last `window` draws it. None for a
    sampler that carries its state (that is `long_context_loss`)."""
    if sampler.reading is None:
        return None
    window, every = sampler.reading
    positions = np.arange(window + every, len(ids))
    if not len(positions):
        return None
    return float(window_scores(sampler, ids, positions, window + positions % every).mean())
