"""How long `charlm-tui cells` takes for its work: trace 10,000 characters through an
LSTM(128) (engine/modeling/trace.py: c, tanh(c), h and the gates of every cell at every step)
and rank every cell against every text property (engine/modeling/cellstats.py).

    .venv/bin/python bench/trace_speed.py [--chars 10000] [--units 128] [--rounds 7]

The goal: the whole, trace plus ranking, within 1 s. The reference, in the same rounds
(alternating, the median reported): the sampler's own recurrence over the same text
(`Sampler.prime`, which keeps nothing but the last state), so the ratio says what
keeping every step costs on top of the bare arithmetic. The text is the held-out tail of
the corpus (lower-cased as the book's: ~57 characters); the weights are random (speed
does not depend on their values, only on the model's size). No TensorFlow. Wall times
are the figures; the CPU time (all threads) is printed too: on a shared machine whose
load average is above its cores, the process waits for a core and wall time says more
about the neighbours than about the code.

This workplace sets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, which halve numpy's matrix
products; OpenBLAS reads them when numpy loads, so the script starts itself again
without them before importing numpy. Writes bench/results/trace_speed.json.
"""

from __future__ import annotations

import os
import sys

SLOWING_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if any(name in os.environ for name in SLOWING_VARIABLES):  # before numpy loads OpenBLAS
    environment = {name: value for name, value in os.environ.items() if name not in SLOWING_VARIABLES}
    os.execve(sys.executable, [sys.executable, *sys.argv], environment)

import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import common as C  # noqa: E402
from engine.data.windows import held_out_text  # noqa: E402 (common puts the checkout on the path)

GOAL_SECONDS = 1.0


def random_sampler(vocab, units: int, layers: int = 1):
    from engine.modeling.sampler import Sampler, weight_shapes

    rng = np.random.default_rng(0)
    weights = {name: rng.normal(0, 1 / np.sqrt(shape[0]) if len(shape) == 2 else 0.1, shape)
               for name, shape in weight_shapes(len(vocab), layers, units).items()}
    return Sampler.from_weights(vocab, weights, lowercase=True)


def one_round(sampler, text: str) -> dict:
    """Seconds for: the trace, the properties, the ranking (as `charlm-tui cells` does them)."""
    from engine.modeling.cellstats import rank_cells, text_properties
    from engine.modeling.trace import trace

    cpu_started, started = time.process_time(), time.perf_counter()
    traced = trace(sampler, text)
    traced_at = time.perf_counter()
    properties = text_properties(traced.text)
    properties_at = time.perf_counter()
    layer = traced.layers[-1]
    ranking = rank_cells(layer.activations, properties)
    ranked_at = time.perf_counter()
    assert all(len(scores) in (0, layer.units) for scores in ranking.values())
    return {"trace": traced_at - started, "properties": properties_at - traced_at,
            "ranking": ranked_at - properties_at, "total": ranked_at - started,
            "total CPU": time.process_time() - cpu_started}


def reference_round(sampler, text: str) -> float:
    sampler.prime(text[:1])  # prime keeps the last seed's answer: another seed first, so this one runs
    started = time.perf_counter()
    sampler.prime(text)
    return time.perf_counter() - started


def main() -> None:
    parser = C.parser("Trace 10,000 characters through an LSTM(128) and rank every cell against every "
                      "property.")
    parser.add_argument("--chars", type=int, default=10_000)
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if args.quick:
        args.chars, args.rounds = 2_000, 3

    corpus = C.load_corpus(args.corpus)
    text, vocab = held_out_text(corpus, 0.1, args.chars), corpus.vocab  # what `cells` reads
    sampler = random_sampler(vocab, args.units)
    one_round(sampler, text[:200])  # warm-up: imports, first allocations
    rounds, references = [], []
    for number in range(args.rounds):
        if number % 2:
            references.append(reference_round(sampler, text))
            rounds.append(one_round(sampler, text))
        else:
            rounds.append(one_round(sampler, text))
            references.append(reference_round(sampler, text))
    medians = {part: statistics.median(r[part] for r in rounds) for part in rounds[0]}
    reference = statistics.median(references)

    print(f"{len(text):,} characters, LSTM({args.units}), {len(vocab)} characters in the vocabulary, "
          f"{args.rounds} rounds (medians):")
    print(C.table([[part, f"{seconds * 1000:.0f} ms"] for part, seconds in medians.items()]
                  + [["reference: Sampler.prime over the same text", f"{reference * 1000:.0f} ms"]],
                  ["part", "median"]))
    load = os.getloadavg()[0]
    met = "met" if medians["total"] <= GOAL_SECONDS else "NOT met"
    print(f"\ntrace + ranking: {medians['total']:.2f} s (goal <= {GOAL_SECONDS:.0f} s: {met}); "
          f"{medians['trace'] / reference:.2f}x the sampler's bare recurrence; "
          f"rounds {', '.join(format(r['total'], '.2f') for r in rounds)} s; "
          f"load average {load:.1f} on {os.cpu_count()} cores")
    C.save("trace_speed", {"chars": len(text), "units": args.units, "vocab": len(vocab), "rounds": rounds,
                           "reference_rounds": references, "medians": medians, "reference_median": reference,
                           "goal_seconds": GOAL_SECONDS, "loadavg": list(os.getloadavg()),
                           "openblas_variables_unset": list(SLOWING_VARIABLES)}, args.out)


if __name__ == "__main__":
    main()
