"""A ~1 GB corpus through the real command line: time, peak memory, progress.

Writes a ~1 GB UTF-8 text file in /tmp (pseudo-English with a few accented and CJK
characters, so the vocabulary is realistic), then runs, as separate processes:

  dry run   `charlm-tui train --corpus BIG --dry-run --json`: reading and encoding only
  train     `charlm-tui train --corpus BIG --steps 20 --length 0`: the default model,
            20 optimizer steps, the held-out evaluation and a checkpoint

and reports, for each, the wall time, the peak resident set size of that process (from
VmHWM), the ratio of that peak to the file size, and the "reading corpus" progress
lines it printed. The goal: the corpus costs about one byte per character (its id
array), plus a fixed overhead (the interpreter, TensorFlow, one 2 MiB chunk being
decoded), never a copy of the text per pass.

    .venv/bin/python bench/big_corpus.py                  # ~1 GB, a few minutes on 2 cores
    .venv/bin/python bench/big_corpus.py --size-mb 200    # smaller
    .venv/bin/python bench/big_corpus.py --skip-train     # the dry run only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20


def write_corpus(path: Path, size: int, seed: int = 0) -> None:
    """~`size` bytes of text: a 4 MiB block of random sentences, written again and again
    from a different offset each time (fast, and not one repeated 4 MiB period)."""
    rng = np.random.default_rng(seed)
    letters = list("etaoinshrdlucmfwypvbgkjqxz")
    weights = np.linspace(2.0, 0.2, len(letters))
    weights /= weights.sum()
    words = ["".join(rng.choice(letters, size=rng.integers(1, 9), p=weights)) for _ in range(3000)]
    words = np.array(words + ["café", "naïve", "über", "smörgåsbord", "東京", "文字"])
    parts, length = [], 0
    while length < 4 * MiB:
        sentence = " ".join(rng.choice(words, size=rng.integers(4, 16)))
        sentence = sentence.capitalize() + rng.choice([".", ",", "!", "?", ";"]) + rng.choice([" ", "\n"])
        parts.append(sentence)
        length += len(sentence.encode())
    block = "".join(parts).encode("utf-8")
    cut = [i for i in range(0, len(block), 4096) if block[i:i + 1] == b" "][:256] or [0]
    written = 0
    with open(path, "wb") as handle:
        while written < size:
            start = int(rng.choice(cut))
            piece = block[start:] + block[:start]
            if len(piece) > size - written:  # the last piece: never cut a character in two
                piece = piece[: size - written].decode("utf-8", "ignore").encode("utf-8")
                if not piece:
                    break
            handle.write(piece)
            written += len(piece)


# `charlm-tui` itself, printing the process's peak RSS (VmHWM) as it exits.
MEASURED = ("import atexit, re, sys\n"
            "def peak():\n"
            "    status = open('/proc/self/status').read()\n"
            "    print('peak-rss-kib', re.search(r'VmHWM:\\s*(\\d+)', status).group(1), file=sys.stderr)\n"
            "atexit.register(peak)\n"
            "from tui.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")


def run_measured(args: list[str]) -> dict:
    """Run the CLI as its own process; its wall time, exit code, peak RSS and output."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", MEASURED, *args], capture_output=True, text=True, env=env,
                         cwd=ROOT)
    seconds = time.monotonic() - started
    stderr = out.stderr.strip().splitlines()
    peak = [int(line.split()[1]) for line in stderr if line.startswith("peak-rss-kib ")]
    return {"exit_code": out.returncode, "seconds": round(seconds, 1),
            "peak_rss_mib": round(peak[-1] / 1024, 1) if peak else None,
            "progress_lines": [line for line in stderr if line.startswith("reading corpus")],
            "stdout_tail": out.stdout.strip().splitlines()[-3:],
            "stderr_tail": [line for line in stderr if not line.startswith("peak-rss-kib ")][-3:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=1024, help="corpus size in MiB (1024)")
    parser.add_argument("--path", default=None, help="where to write it (default: a file in /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the corpus file afterwards")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps in the training run (20)")
    parser.add_argument("--skip-train", action="store_true", help="the dry run only")
    parser.add_argument("--out", default=None, help="result JSON (default bench/results/big_corpus.json)")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="charlm-big-", dir="/tmp"))
    corpus = Path(args.path) if args.path else scratch / "big.txt"
    size = int(args.size_mb * MiB)
    started = time.monotonic()
    write_corpus(corpus, size)
    size = corpus.stat().st_size
    results = {"benchmark": "big_corpus", "python": platform.python_version(), "cpus": os.cpu_count(),
               "corpus_bytes": size, "corpus_mib": round(size / MiB, 1),
               "write_seconds": round(time.monotonic() - started, 1)}
    print(f"wrote {corpus} ({size / MiB:,.0f} MiB) in {results['write_seconds']} s", flush=True)
    try:
        runs = {"dry_run": ["--dry-run", "--json"]}
        if not args.skip_train:
            runs["train"] = ["--steps", str(args.steps), "--length", "0", "--fresh", "--json"]
        for name, extra in runs.items():
            result = run_measured(["train", "--corpus", str(corpus), "--run", str(scratch / "run"), *extra])
            result["peak_rss_over_corpus"] = round(result["peak_rss_mib"] / (size / MiB), 2)
            results[name] = result
            print(f"{name:8s} exit {result['exit_code']}, {result['seconds']} s, peak RSS "
                  f"{result['peak_rss_mib']:,.0f} MiB ({result['peak_rss_over_corpus']}x the file), "
                  f"{len(result['progress_lines'])} progress lines", flush=True)
            for line in result["progress_lines"][:3] + result["progress_lines"][-1:]:
                print(f"         {line}")
            if result["exit_code"] != 0:
                print("\n".join(result["stderr_tail"]), file=sys.stderr)
    finally:
        if not args.keep:
            corpus.unlink(missing_ok=True)
        if corpus.parent == scratch and args.keep:
            shutil.rmtree(scratch / "run", ignore_errors=True)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / "big_corpus.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    ran = [name for name in ("dry_run", "train") if name in results]
    return 0 if all(results[name]["exit_code"] == 0 for name in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
