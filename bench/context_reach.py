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
    from engine.modeling.longcontext import window_scores
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
    rows, columns = np.divmod(np.arange(pieces.size), length)
    scored = (columns >= args.skip) & ((columns - args.skip) % args.every == 0)
    positions = np.flatnonzero(scored)  # in the pieces laid end to end: the held-out text itself
    figures = {"carried": float(carried[rows[scored], columns[scored] - 1].mean())}
    for window in WINDOWS:
        figures[f"last {window}"] = float(window_scores(sampler, pieces.ravel(), positions, window).mean())
    if sampler.reading is not None:
        window, every = sampler.reading
        reads = window + columns[scored] % every
        figures[f"as read ({window}-{window + every - 1})"] = float(
            window_scores(sampler, pieces.ravel(), positions, reads).mean())
    print(f"{args.run} ({saved.choice} checkpoint): {len(positions):,} held-out characters, each at least "
          f"{args.skip} into one of {args.streams} pieces")
    print(C.table([[name, f"{value:.4f}"] for name, value in figures.items()],
                  ["read before each character", "held-out nats/char"]))


if __name__ == "__main__":
    sys.exit(main())
