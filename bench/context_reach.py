"""How far back a run's model reads: its held-out loss by how much text it has read
before each scored character. No TensorFlow: the run's numpy sampler scores.

The held-out text (the run's own, or `--corpus`: a path, nietzsche, pydocs or play, as
bench/structure.py takes it) is cut into `--streams` consecutive pieces; the characters
at least `--skip` characters into a piece (every `--every`th of them, to keep it quick)
are each scored from a zero state over the last 16, 32 and 56 characters before it,
with the state carried through the whole piece, and as the run's sampler reads the
stream it generates (engine.modeling.sampler.reading_for). All scores are of the same
characters, so the columns compare directly:

    .venv/bin/python bench/context_reach.py --run runs/play --corpus play

A model that uses what lies further back scores lower the more it reads; one whose state
leaves what it learnt past its training lengths scores higher.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import common as C

WINDOWS = (16, 32, 56)


def windowed_scores(sampler, pieces: np.ndarray, targets: np.ndarray, reads: np.ndarray) -> np.ndarray:
    """Nats for pieces[row, t] read from a zero state over the `reads[i]` characters before
    it, for each (row, t) in `targets` (pairs); `reads` has one length per pair."""
    scores = np.empty(len(targets))
    for length in np.unique(reads):
        chosen = np.flatnonzero(reads == length)
        rows = np.stack([pieces[row, t - length:t + 1] for row, t in targets[chosen]])
        scores[chosen] = -sampler.log_likelihoods(rows)[:, -1]
    return scores


def main() -> None:
    p = argparse.ArgumentParser(description="Held-out loss by how much the model reads before each char.")
    p.add_argument("--run", required=True, help="the run directory")
    p.add_argument("--corpus", default=None,
                   help="its text: a path, nietzsche, pydocs or play (default: the run's)")
    p.add_argument("--checkpoint", default=None, help="latest, best or a FILE (default: best once stopped)")
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--skip", type=int, default=256, help="characters into a piece before the first scored")
    p.add_argument("--every", type=int, default=3, help="score every Nth character after that")
    args = p.parse_args()

    import structure
    from engine.data.windows import split_point
    from engine.run.follow import open_run

    saved = open_run(args.run, checkpoint=args.checkpoint)
    sampler = saved.sampler
    text = structure.whole_text(args.corpus, saved)
    try:
        ids = np.array(sampler.encode(text[split_point(len(text), saved.config.val_fraction):]))
    except ValueError as error:
        raise SystemExit(f"{args.corpus or 'the corpus'} is not the text {args.run} was trained on: "
                         f"{error}") from None
    length = len(ids) // args.streams
    if length <= args.skip + 1:
        raise SystemExit(f"the held-out text ({len(ids):,} characters) is too short for "
                         f"{args.streams} streams")
    pieces = ids[:args.streams * length].reshape(args.streams, length)
    carried = -sampler.log_likelihoods(pieces)  # column t - 1 scores pieces[:, t]
    targets = np.array([(row, t) for row in range(args.streams)
                        for t in range(args.skip, length, args.every)])
    figures = {"carried": float(carried[targets[:, 0], targets[:, 1] - 1].mean())}
    for window in WINDOWS:
        figures[f"last {window}"] = float(windowed_scores(sampler, pieces, targets,
                                                          np.full(len(targets), window)).mean())
    if sampler.reading is not None:
        window, every = sampler.reading
        reads = window + targets[:, 1] % every
        figures[f"as read ({window}-{window + every - 1})"] = float(
            windowed_scores(sampler, pieces, targets, reads).mean())
    print(f"{args.run} ({saved.choice} checkpoint): {len(targets):,} held-out characters, each at least "
          f"{args.skip} into one of {args.streams} pieces")
    print(C.table([[name, f"{value:.4f}"] for name, value in figures.items()],
                  ["read before each character", "held-out nats/char"]))


if __name__ == "__main__":
    sys.exit(main())
