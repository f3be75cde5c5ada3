"""Run every benchmark (each in its own process, one after another) and print a
markdown table for the README, with the command line of each figure.

    .venv/bin/python bench/run_all.py            # the full runs (about 20 minutes)
    .venv/bin/python bench/run_all.py --quick    # a smoke test (about 3 minutes)
"""

from __future__ import annotations

import json
import subprocess
import sys

import common as C

BENCHMARKS = ["train_throughput", "heldout_loss", "sampler_speed", "data_memory"]


def run(name: str, quick: bool, corpus: str) -> dict:
    out = C.RESULTS / (f"{name}-quick.json" if quick else f"{name}.json")
    command = [sys.executable, str(C.BENCH / f"{name}.py"), "--corpus", corpus, "--out", str(out)]
    if quick:
        command.append("--quick")
    print(f"\n=== {name} ===", flush=True)
    subprocess.run(command, check=True, cwd=C.ROOT)
    return json.loads(out.read_text())


def rows(results: dict[str, dict], quick: bool) -> list[list[str]]:
    flag = " --quick" if quick else ""
    out = []
    r = results.get("train_throughput")
    if r:
        out.append(["training throughput (target chars/s)", f"{r['book']['targets_per_s']:,.0f}",
                    f"{r['ours']['targets_per_s']:,.0f}", f"{r['ratio_median_round']:.0f}x", ">= 60x",
                    "met" if r["met"] else "not met", f"`.venv/bin/python bench/train_throughput.py{flag}`"])
    r = results.get("heldout_loss")
    if r and "summary" in r:
        s = r["summary"]
        out.append([f"held-out loss (nats/char), book {r['book_seconds']:g} s "
                    f"vs ours {r['fast_seconds']:g} s",
                    f"{s['book']:.3f}", f"{s['ours_final']:.3f}", f"{s['book'] - s['ours_final']:.2f} lower",
                    "<= 1.35", "met" if s["met"] else "not met",
                    f"`.venv/bin/python bench/heldout_loss.py{flag}`"])
        out.append([f"held-out loss (nats/char), both {r['book_seconds']:g} s", f"{s['book']:.3f}",
                    f"{s['ours_at_book_budget']:.3f}", f"{s['book'] - s['ours_at_book_budget']:.2f} lower",
                    "", "", "(same run)"])
    r = results.get("sampler_speed")
    if r:
        out.append(["generation (chars/s, 4 temperatures)", f"{r['book_chars_per_s']:,.1f}",
                    f"{r['ours_chars_per_s']:,.0f}", f"{r['ratio']:,.0f}x", ">= 500x",
                    "met" if r["met"] else "not met", f"`.venv/bin/python bench/sampler_speed.py{flag}`"])
    r = results.get("data_memory")
    if r:
        out.append(["data preparation peak memory (tracemalloc)",
                    f"{r['book']['tracemalloc_peak'] / 1e6:,.0f} MB",
                    f"{r['ours']['tracemalloc_peak'] / 1e6:,.1f} MB", f"1/{r['ratio_tracemalloc']:,.0f}",
                    "<= 1/50", "met" if r["met"] else "not met",
                    f"`.venv/bin/python bench/data_memory.py{flag}`"])
    return out


def markdown(rows_: list[list[str]]) -> str:
    headers = ["benchmark", "book (8.1)", "ours (fast)", "ours vs book", "goal", "", "command"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows_]
    return "\n".join(lines)


def main() -> None:
    p = C.parser("Run all benchmarks and print a markdown table.")
    p.add_argument("--only", nargs="*", choices=BENCHMARKS, help="run only these")
    p.add_argument("--table-only", action="store_true", help="print the table from saved results")
    args = p.parse_args()
    results = {}
    for name in args.only or BENCHMARKS:
        if args.table_only:
            path = C.RESULTS / (f"{name}-quick.json" if args.quick else f"{name}.json")
            if path.exists():
                results[name] = json.loads(path.read_text())
        else:
            results[name] = run(name, args.quick, args.corpus)
    table = markdown(rows(results, args.quick))
    print("\n" + table)
    C.RESULTS.mkdir(parents=True, exist_ok=True)
    (C.RESULTS / ("summary-quick.md" if args.quick else "summary.md")).write_text(table + "\n")


if __name__ == "__main__":
    main()
