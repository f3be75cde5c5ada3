"""Soak test: does memory stay flat over thousands of sampling rounds and epochs?

A tiny model (LSTM(8) on a few KB of text), so the run is about the engine's own
bookkeeping, not the maths. Three phases in one process, each measuring the resident
set size (RSS, after a gc.collect()) at regular points:

  sampling  N rounds of Sampler.generate (4 temperatures), a fresh Trainer.sampler()
            snapshot every 10 rounds, as the app does while training runs
  epochs    one Trainer run of many tiny epochs: Keras fit per epoch, held-out loss,
            a checkpoint and a sample round after each
  sessions  many short Trainer runs in a row on the same run directory (stop, resume),
            each loading the checkpoint into a new Keras model

For each phase: RSS at start, middle and end, and the slope over the second half (after
warm-up: TensorFlow's first traces, allocator pools), in KiB per 1,000 rounds, per 100
epochs and per session. A leak shows as a slope that does not go to zero.

    .venv/bin/python bench/soak_memory.py            # ~2-4 minutes on 2 CPU cores
    .venv/bin/python bench/soak_memory.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def rss_bytes() -> int:
    gc.collect()
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def summary(points: list[tuple[float, int]], per: float) -> dict:
    """RSS start/middle/end (MiB) and the least-squares slope (KiB per `per` units) over
    the second half of the points."""
    xs = np.array([x for x, _ in points], dtype=float)
    ys = np.array([y for _, y in points], dtype=float)
    half = len(points) // 2
    slope = np.polyfit(xs[half:], ys[half:], 1)[0] if len(points) - half >= 2 else float("nan")
    return {"rss_start_mib": round(ys[0] / 2**20, 1), "rss_middle_mib": round(ys[half] / 2**20, 1),
            "rss_end_mib": round(ys[-1] / 2**20, 1),
            "growth_second_half_mib": round((ys[-1] - ys[half]) / 2**20, 2),
            f"slope_kib_per_{per:g}": round(slope * per / 1024, 1), "points": len(points)}


def tiny_corpus(directory: Path):
    from engine.data.corpus import load_corpus

    words = ("the will to power is the will of life itself and every philosopher knows "
             "that truth is a woman who does not wish to be won by clumsy men").split()
    rng = np.random.default_rng(0)
    sentences = [" ".join(rng.choice(words, size=rng.integers(4, 10))).capitalize() + ".\n"
                 for _ in range(120)]
    path = directory / "soak.txt"
    path.write_text("".join(sentences)[:6000], encoding="utf-8")
    return load_corpus(path)


def config(**overrides):
    from engine.config import preset

    settings = dict(units=8, maxlen=16, step=8, batch_size=128, epochs=1, log_every=5,
                    sample_length=20, checkpoint_every=3600.0)
    settings.update(overrides)
    return preset("fast", **settings)


def sampling_phase(corpus, run_dir: Path, rounds: int) -> dict:
    from engine.run.training import Trainer

    trainer = Trainer(corpus, config(steps=2), run_dir, sample_each_epoch=False)
    trainer.run()
    seed_text = corpus.text(0, 16)
    sampler = trainer.sampler()
    points, every = [], max(1, rounds // 20)
    started = time.monotonic()
    for i in range(rounds + 1):
        if i % every == 0:
            points.append((i, rss_bytes()))
        if i % 10 == 0:
            sampler = trainer.sampler()
        sampler.generate(seed_text, (0.2, 0.5, 1.0, 1.2), 50, seed=i)
    result = summary(points, 1000)
    result.update(rounds=rounds, seconds=round(time.monotonic() - started, 1))
    return result


def epochs_phase(corpus, run_dir: Path, epochs: int) -> dict:
    from engine import events
    from engine.run.training import Trainer

    points, every = [], max(1, epochs // 20)

    functions = {}

    def on_event(event):
        if isinstance(event, events.EpochEnd) and (event.epoch % every == 0 or event.epoch == 1):
            points.append((event.epoch, rss_bytes()))
        if isinstance(event, events.EpochEnd) and event.epoch == 2:
            functions["after_epoch_2"] = registered_functions()

    started = time.monotonic()
    trainer = Trainer(corpus, config(epochs=epochs), run_dir, on_event=on_event, fresh=True)
    finished = trainer.run()
    result = summary(points, 100)
    result.update(epochs=finished.epoch, steps=finished.step,
                  steps_per_epoch=trainer.train_windows.batches_per_epoch,
                  seconds=round(time.monotonic() - started, 1))
    if functions.get("after_epoch_2") is not None:
        result["functions_traced_after_epoch_2"] = registered_functions() - functions["after_epoch_2"]
    return result


def registered_functions() -> int | None:
    """Functions traced into TensorFlow's eager context so far (None: TensorFlow no longer
    says). A count that grows epoch after epoch means Keras retraces per fit call (a leak)."""
    from engine.compat import traced_function_count

    return traced_function_count()


def sessions_phase(corpus, run_dir: Path, sessions: int) -> dict:
    from engine.run.training import Trainer

    points = []
    started = time.monotonic()
    functions = registered_functions()
    for i in range(sessions + 1):
        Trainer(corpus, config(steps=3, epochs=100_000), run_dir, sample_each_epoch=False).run()
        points.append((i, rss_bytes()))
    result = summary(points, 1)
    result.update(sessions=sessions, seconds=round(time.monotonic() - started, 1))
    if functions is not None:
        traced = registered_functions() - functions
        result["functions_traced_per_session"] = round(traced / (sessions + 1), 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (a few seconds of each phase)")
    parser.add_argument("--rounds", type=int, default=2000, help="sampling rounds (2000)")
    parser.add_argument("--epochs", type=int, default=400, help="tiny epochs in one run (400)")
    parser.add_argument("--sessions", type=int, default=40, help="stop/resume sessions (40)")
    parser.add_argument("--out", default=None, help="result JSON (default bench/results/soak_memory.json)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.epochs, args.sessions = 200, 40, 6

    from engine.tfsetup import keras

    keras()
    results = {"benchmark": "soak_memory", "python": platform.python_version(),
               "tensorflow": __import__("tensorflow").__version__, "keras": keras().__version__,
               "rss_after_import_mib": round(rss_bytes() / 2**20, 1)}
    with tempfile.TemporaryDirectory(prefix="charlm-soak-") as scratch:
        scratch = Path(scratch)
        corpus = tiny_corpus(scratch)
        for name, phase, count in (("sampling", sampling_phase, args.rounds),
                                   ("epochs", epochs_phase, args.epochs),
                                   ("sessions", sessions_phase, args.sessions)):
            results[name] = phase(corpus, scratch / name, count)
            print(f"{name:9s} {json.dumps(results[name])}", flush=True)
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / "soak_memory.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
