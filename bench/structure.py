"""The shape of a run's samples against its training text: line lengths, over-long
lines, quote and bracket balance (engine/data/textshape.py). No TensorFlow: the run's numpy
sampler (engine/run/follow.py, its sidecar) generates.

For each fixed seed, a seed text of 200 characters of the training text ending at a
line end starts `--chars` characters at each temperature (1.0, where sampling is
faithful to the model, and 0.5). They are compared with the first 90% of the corpus:
line median and p90 as ratios of the text's (1.0 is the text's), the share of
characters in lines over twice the text's p99, and the bracket and quote measures of
both. The corpus is the run's unless `--corpus` names one: a path, `nietzsche`,
`pydocs`, or `play`, a play-formatted text this script builds itself (speakers' turns in
upper case, short verse lines); `--write-play FILE` writes it, to train a run on:

    .venv/bin/python bench/structure.py --write-play /tmp/play.txt
    charlm-tui train --corpus /tmp/play.txt --run runs/play --time-budget 5m
    .venv/bin/python bench/structure.py --run runs/play --corpus play
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

import common as C

SEED_CHARS = 200
PLAY_CHARS = 600_000
SPEAKERS = ("HAMLET", "OPHELIA", "POLONIUS", "LAERTES", "GERTRUDE", "HORATIO", "FIRST PLAYER")
WORDS = ("my lord the king is dead and all the court is mad with grief but I will speak to him "
         "of what was done in the night when none could see us and the ghost walked upon the wall").split()


def play_text(chars: int = PLAY_CHARS, seed: int = 0) -> str:
    """A play, the same for the same arguments: a speaker's name in upper case on a line of
    its own, two to six verse lines of 20-45 characters, sometimes a [stage direction] or a
    "quoted" phrase, a blank line between turns."""
    rng = np.random.default_rng(seed)
    turns, length = [], 0
    while length < chars:
        lines = [f"{SPEAKERS[rng.integers(len(SPEAKERS))]}."]
        for _ in range(rng.integers(2, 7)):
            line = ""
            target = rng.integers(20, 46)
            while len(line) < target:
                line += (" " if line else "") + str(rng.choice(WORDS))
            line = line[:45].rstrip().capitalize()
            if rng.random() < 0.1:
                line = f'{line[:30]} "{rng.choice(WORDS)}"'
            lines.append(line + ("," if rng.random() < 0.5 else "."))
        if rng.random() < 0.2:
            lines.append(f"[{str(rng.choice(('Exit', 'Enter', 'Aside', 'Exeunt'))).capitalize()}.]")
        turn = "\n".join(lines) + "\n\n"
        turns.append(turn)
        length += len(turn)
    return "".join(turns)[:chars]


def whole_text(spec: str | None, saved) -> str:
    """The whole corpus (`spec`, else the run's own), in the run's case."""
    from engine.data.corpus import load_corpus
    from engine.run import follow

    config = saved.config
    if spec == "play":
        text = play_text()
        return text.lower() if config.lowercase else text
    if spec:
        corpus, why = load_corpus(spec, lowercase=config.lowercase), None
    else:
        corpus, why = follow.training_text(saved)
    if corpus is None:
        raise SystemExit(f"{why}; give --corpus")
    return corpus.text(0, len(corpus))


def training_text(spec: str | None, saved) -> str:
    """The first (1 - val_fraction) of the corpus, as the run was trained on it."""
    from engine.data.windows import split_point

    text = whole_text(spec, saved)
    return text[:split_point(len(text), saved.config.val_fraction)]


def seed_texts(text: str, seeds: list[int]) -> list[str]:
    """For each seed, the SEED_CHARS characters of `text` that end just after a newline
    at a random place: each sample starts a line."""
    texts = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        start = int(rng.integers(SEED_CHARS, len(text) - 1))
        end = text.find("\n", start) + 1 or len(text)
        texts.append(text[max(0, end - SEED_CHARS):end])
    return texts


def main() -> None:
    p = argparse.ArgumentParser(description="Line lengths and balance of a run's samples against its text.")
    p.add_argument("--run", help="the run directory to sample from")
    p.add_argument("--corpus", default=None,
                   help="the training text: a path, nietzsche, pydocs or play (default: the run's)")
    p.add_argument("--checkpoint", default=None, help="latest, best or a FILE (default: best once stopped)")
    p.add_argument("--chars", type=int, default=6000, help="characters per seed and temperature (6000)")
    p.add_argument("--seeds", default="1,2,3", help="sampling seeds (1,2,3)")
    p.add_argument("--temperatures", default="1.0,0.5")
    p.add_argument("--carried", action="store_true",
                   help="sample with the state carried through the stream, not read in the run's windows "
                        "(the sampler before 2026-12-04; a book run's always)")
    p.add_argument("--write-play", metavar="FILE", help="write the play-formatted corpus to FILE and exit")
    p.add_argument("--out", default=None, help="result JSON (default bench/results/structure.json)")
    args = p.parse_args()
    if args.write_play:
        Path(args.write_play).write_text(play_text(), encoding="utf-8")
        print(f"wrote {PLAY_CHARS:,} characters of a play to {args.write_play}")
        return
    if not args.run:
        p.error("give --run DIR (or --write-play FILE)")

    from engine.data.textshape import compare, shape
    from engine.run.follow import open_run

    saved = open_run(args.run, checkpoint=args.checkpoint)
    if args.carried:
        saved.sampler.reading = None
    text = training_text(args.corpus, saved)
    reference = shape(text)
    seeds = [int(s) for s in args.seeds.split(",")]
    temperatures = [float(t) for t in args.temperatures.split(",")]
    samples: dict[float, list[str]] = {t: [] for t in temperatures}
    for seed, seed_text in zip(seeds, seed_texts(text, seeds)):
        try:
            generated = saved.sampler.generate(seed_text, temperatures, args.chars, seed=seed)
        except ValueError as error:  # a --corpus with characters the run never saw
            raise SystemExit(f"{args.corpus or 'the corpus'} is not the text {args.run} was trained on: "
                             f"{error}") from None
        for temperature, sample in generated.items():
            samples[temperature].append(sample)

    print(f"{args.run} ({saved.choice} checkpoint): {len(seeds)} seeds x {args.chars:,} chars a temperature "
          f"against the first {len(text):,} characters of its text")
    print(f"text: line median {reference.median:g}, p90 {reference.p90:g}, p99 {reference.p99:g}; "
          f"brackets unmatched {reference.brackets:.3f}, paragraphs with a quote open {reference.quotes:.3f}")
    rows, result = [], {"run": str(args.run), "checkpoint": saved.choice, "corpus": args.corpus,
                        "chars": args.chars, "seeds": seeds, "text": reference.as_json(), "samples": {}}
    for temperature in temperatures:
        per_seed = [shape(sample, reference.long_limit) for sample in samples[temperature]]
        pooled = compare(shape("\n".join(samples[temperature]), reference.long_limit), reference)
        result["samples"][str(temperature)] = {"pooled": pooled, "per_seed": [s.as_json() for s in per_seed]}
        rows.append([f"{temperature:g}", f"x{pooled['median_ratio']}", f"x{pooled['p90_ratio']}",
                     f"{pooled['long_share']:.0%}", f"{pooled['brackets']:.3f}", f"{pooled['quotes']:.3f}"])
    print()
    print(C.table(rows, ["T", "median line", "p90", f"chars in lines > {reference.long_limit:g}",
                         "brackets unmatched", "quotes open"]))
    result["loadavg_end"] = list(os.getloadavg())
    C.save("structure", result, args.out)


if __name__ == "__main__":
    sys.exit(main())
