"""The memorization check's index (engine/modeling/novelty.py): build time, memory, lookup time.

For each corpus (synthetic pseudo-English of 1, 10 and 100 MiB, and the book's
nietzsche.txt when present), in a fresh process each so one size's memory does not
hide another's:

  build     NoveltyIndex.build over the corpus ids: seconds, the peak of memory
            allocated meanwhile (tracemalloc, which numpy reports to), the growth of the
            process's peak resident set (VmHWM), and the index's own size;
  lookup    NoveltyIndex.measure of a 400-character sample, median over many calls, for
            three kinds of sample: copied from the corpus (100% / 400), mixed (for a
            synthetic corpus, new draws of its words: novel text whose common phrases
            recur; for a real text, 40-character pieces from random places) and random
            characters (nothing found).

No TensorFlow. The synthetic corpus draws words from a Zipf-like lexicon of 5,000 made-up
words, so frequent 20-grams recur as in real text, and its ids are made a chunk at a
time so the generator's own memory stays small next to the index's.

    .venv/bin/python bench/novelty_index.py               # 1, 10, 100 MiB and nietzsche
    .venv/bin/python bench/novelty_index.py --sizes 1 10  # smaller
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import tracemalloc

import numpy as np

import common as C

MiB = 2**20
SAMPLE_LENGTH = 400
LOOKUPS = 200


def synthetic_corpus(chars: int, seed: int = 0) -> tuple[np.ndarray, tuple[str, ...]]:
    """`chars` ids of pseudo-English: lower-case made-up words, spaces, some full stops."""
    rng = np.random.default_rng(seed)
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    vocab = tuple(sorted(" .\n" + letters))
    code = {char: i for i, char in enumerate(vocab)}
    frequency = np.linspace(2.0, 0.2, len(letters))
    lexicon = ["".join(rng.choice(list(letters), size=rng.integers(1, 10), p=frequency / frequency.sum()))
               for _ in range(5000)]
    words = [np.array([code[c] for c in word] + [code[" "]], dtype=np.uint8) for word in lexicon]
    words[0][-1], words[1][-1] = code["."], code["\n"]  # two "words" end a sentence or a line
    zipf = 1.0 / np.arange(1, len(words) + 1)
    zipf /= zipf.sum()
    flat = np.concatenate(words)
    starts = np.concatenate([[0], np.cumsum([len(w) for w in words])[:-1]])
    lengths = np.array([len(w) for w in words])

    ids = np.empty(chars, dtype=np.uint8)
    filled = 0
    while filled < chars:  # ~1 MiB of words at a time
        chosen = rng.choice(len(words), size=200_000, p=zipf)
        sizes = lengths[chosen]
        # The characters of the chosen words, end to end, without a Python loop.
        offsets = np.repeat(starts[chosen] - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
        piece = flat[offsets + np.arange(sizes.sum())]
        take = min(len(piece), chars - filled)
        ids[filled:filled + take] = piece[:take]
        filled += take
    return ids, vocab


def peak_rss_kib() -> int:
    return int(re.search(r"VmHWM:\s*(\d+)", open("/proc/self/status").read()).group(1))


def reset_peak_rss() -> None:
    """Make VmHWM start again from the current RSS (Linux: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def measure_one(spec: str) -> dict:
    """Build and query one corpus in this process."""
    from engine.modeling.novelty import NoveltyIndex

    if spec.startswith("synthetic:"):
        ids, vocab = synthetic_corpus(int(float(spec.split(":")[1]) * MiB))
        name = f"synthetic {float(spec.split(':')[1]):g} MiB"
    else:
        from engine.data.corpus import load_corpus

        corpus = load_corpus(spec)
        ids, vocab, name = corpus.ids, corpus.vocab, os.path.basename(spec)

    reset_peak_rss()
    rss_before = peak_rss_kib()
    tracemalloc.start()
    started = time.perf_counter()
    index = NoveltyIndex.build(ids, vocab, name=name)
    build_seconds = time.perf_counter() - started
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_growth = peak_rss_kib() - rss_before

    rng = np.random.default_rng(1)
    text = lambda start: "".join(vocab[i] for i in ids[start:start + SAMPLE_LENGTH])  # noqa: E731
    novel_ids, _ = synthetic_corpus(SAMPLE_LENGTH * 50, seed=7)  # same lexicon, other draws
    samples = {
        "copied": text(int(rng.integers(0, len(ids) - SAMPLE_LENGTH))),
        "mixed": "".join(vocab[i] for i in novel_ids[1000:1000 + SAMPLE_LENGTH])
        if spec.startswith("synthetic:") else None,
        "random": "".join(rng.choice(list(vocab), size=SAMPLE_LENGTH)),
    }
    if samples["mixed"] is None:  # a real text: pieces of itself end to end
        pieces = [text(int(rng.integers(0, len(ids) - 40)))[:40] for _ in range(10)]
        samples["mixed"] = "".join(pieces)[:SAMPLE_LENGTH]
    lookups = {}
    for kind, sample in samples.items():
        result = index.measure(sample)
        times = []
        for _ in range(LOOKUPS):
            started = time.perf_counter()
            index.measure(sample)
            times.append(time.perf_counter() - started)
        lookups[kind] = {"median_ms": round(statistics.median(times) * 1000, 3),
                         "p90_ms": round(sorted(times)[int(0.9 * len(times))] * 1000, 3),
                         "share": round(result.share, 4), "longest": result.longest}
    return {"corpus": name, "chars": int(len(ids)), "build_seconds": round(build_seconds, 2),
            "build_peak_traced_mib": round(traced_peak / MiB, 1),
            "build_peak_rss_growth_mib": round(rss_growth / 1024, 1),
            "index_mib": round(index.nbytes / MiB, 1),
            "index_bytes_per_char": round(index.nbytes / max(1, len(ids)), 2), "lookups": lookups}


def main() -> int:
    parser = C.parser(__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=float, nargs="*", default=[1, 10, 100], help="synthetic sizes in MiB")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child process: one corpus, one JSON line
        print(json.dumps(measure_one(args.one)))
        return 0

    specs = [f"synthetic:{size:g}" for size in args.sizes]
    if os.path.isfile(args.corpus):
        specs.append(args.corpus)
    rows, results = [], []
    for spec in specs:
        out = subprocess.run([sys.executable, __file__, "--one", spec], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{spec}: failed\n{out.stderr}", file=sys.stderr)
            return 1
        result = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(result)
        looks = result["lookups"]
        rows.append([result["corpus"], f"{result['chars']:,}", result["build_seconds"],
                     result["build_peak_traced_mib"], result["build_peak_rss_growth_mib"],
                     result["index_mib"],
                     *(f"{looks[kind]['median_ms']} ({looks[kind]['share']:.0%}, {looks[kind]['longest']})"
                       for kind in ("copied", "mixed", "random"))])
        print(f"{result['corpus']}: built in {result['build_seconds']} s", flush=True)
    print()
    print(C.table(rows, ["corpus", "chars", "build s", "build peak MiB (traced)", "peak RSS growth MiB",
                         "index MiB", "lookup ms: copied", "mixed", "random"]))
    print(f"\nlookup: median of {LOOKUPS} calls of NoveltyIndex.measure on a {SAMPLE_LENGTH}-char sample "
          "(share found, longest copied run); load average now "
          + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    C.save("novelty_index", {"cpus": os.cpu_count(), "numpy": np.__version__, "results": results,
                             "loadavg_end": list(os.getloadavg())}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
