"""Peak memory of preparing the training data: the book's vectorisation vs ours.

The book: read the text, cut 60-char windows every 3 chars, one-hot x (N, 60, 57) and
y (N, 57) bool arrays. Ours: engine.data.corpus.load_corpus, the fast preset's lazy Windows,
and every (x, y) batch of one epoch gathered in turn. Each runs in its own fresh
subprocess, measured two ways: the tracemalloc peak (Python and numpy allocations) and
the growth of ru_maxrss over the process's own baseline (numpy and our modules
imported, nothing else). TensorFlow is not imported by either.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import common as C

CHILD = r"""
import json, resource, sys, time, tracemalloc
sys.path[:0] = {paths!r}
import numpy as np
import common as C
from engine.data import corpus as _corpus
from engine.data import windows as _windows  # our modules: part of the baseline
which, spec = sys.argv[1], sys.argv[2]
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
t = time.perf_counter()
if which == "book":
    text = C.book_text(C.corpus_path(spec))
    x, y, chars, char_indices = C.book_vectorize(text)
    info = {{"x_shape": list(x.shape), "y_shape": list(y.shape), "arrays_bytes": x.nbytes + y.nbytes}}
else:
    corpus = C.load_corpus(spec)
    config = C.fast_config()
    w = _windows.Windows(corpus.ids, config.maxlen, config.step, config.objective, config.batch_size,
                         seed=config.seed)
    targets = 0
    for b in range(w.batches_per_epoch):
        xb, yb = w.batch(0, b)
        targets += yb.size
    info = {{"ids_bytes": int(corpus.ids.nbytes), "windows": w.count, "batches": w.batches_per_epoch,
            "targets": targets, "batch_bytes": int(xb.nbytes + yb.nbytes)}}
seconds = time.perf_counter() - t
current, peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"tracemalloc_peak": peak, "maxrss_delta": (rss1 - rss0) * 1024,
                  "seconds": seconds, **info}}))
"""


def measure(which: str, spec: str) -> dict:
    code = CHILD.format(paths=[str(C.BENCH), str(C.ROOT)])
    out = subprocess.run([sys.executable, "-c", code, which, spec], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def main() -> None:
    p = C.parser("Peak memory of data preparation: the book vs ours.")
    args = p.parse_args()  # --quick changes nothing: both take seconds
    book = measure("book", args.corpus)
    ours = measure("ours", args.corpus)
    ratio_trace = book["tracemalloc_peak"] / ours["tracemalloc_peak"]
    ratio_rss = book["maxrss_delta"] / max(ours["maxrss_delta"], 1)
    print(C.table([
        ["book (one-hot x, y)", mb(book["tracemalloc_peak"]),
         mb(book["maxrss_delta"]), f"{book['seconds']:.1f}"],
        ["ours (ids + lazy windows, one epoch of batches)", mb(ours["tracemalloc_peak"]),
         mb(ours["maxrss_delta"]), f"{ours['seconds']:.1f}"],
    ], ["data preparation", "tracemalloc peak", "max RSS growth", "seconds"]))
    print(f"book / ours: {ratio_trace:,.0f}x (tracemalloc), {ratio_rss:,.0f}x (RSS); "
          f"goal ours <= 1/50 of the book: {'met' if min(ratio_trace, ratio_rss) >= 50 else 'NOT met'}")
    C.save("data_memory", {"book": book, "ours": ours, "ratio_tracemalloc": ratio_trace,
                           "ratio_maxrss": ratio_rss, "goal": 50,
                           "met": min(ratio_trace, ratio_rss) >= 50}, args.out)


if __name__ == "__main__":
    main()
