"""How long `charlm-tui sample --run R --length 400` takes, and its peak memory, when the
checkpoint is read from its numpy sidecar (no TensorFlow) vs through Keras.

    .venv/bin/python bench/sample_startup.py [--run DIR] [--rounds 5] [--train-steps 300]

Each figure is the real command in a fresh process, from its start to its exit (Python
start-up included): wall time, and peak RSS from the kernel's accounting of that one
child (os.wait4). The Keras path is the same run with model.sampler.npz removed, i.e.
what every `sample` cost before sidecars (that run then rebuilds the sidecar, a few
milliseconds included in its time). Rounds alternate the two, swapping which goes first,
and the medians are reported; both must print the same text for the same --seed.
`python -c "import tensorflow"` is timed alongside for reference.

Without --run, a run is trained first: the default (fast) preset on the corpus for
--train-steps steps (a few hundred: the weights' values do not change the timing, only
the model's size does). The run is copied to a scratch folder before sampling, so the
benchmark never writes into a run of yours. Writes bench/results/sample_startup.json.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import common as C

GOAL_SECONDS, GOAL_MB = 0.5, 150
CHECKPOINT_FILES = ("config.json", "vocab.json", "model.keras", "model.sampler.npz")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def measure(command: list[str], output: Path) -> dict:
    """Wall seconds, CPU seconds (user + system: less sensitive to a shared machine's load)
    and peak RSS (MB) of one child process, from fork to exit."""
    errors = output.with_suffix(".stderr")
    with open(output, "wb") as stdout, open(errors, "wb") as stderr:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=stdout, stderr=stderr, cwd=C.ROOT, env=ENV)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, not all children's
        seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({child.returncode}):\n"
                         f"{errors.read_text(errors='replace')}")
    return {"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "peak_mb": usage.ru_maxrss / 1024}  # ru_maxrss is in KiB on Linux


def train_run(corpus: str, run_dir: Path, steps: int) -> None:
    print(f"training {run_dir} for {steps} steps of the fast preset on {corpus} ...", flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tui.cli", "train", "--corpus", corpus, "--run", str(run_dir),
                    "--steps", str(steps), "--length", "0"], check=True, cwd=C.ROOT, env=ENV,
                   stdout=subprocess.DEVNULL)
    print(f"  trained in {time.perf_counter() - started:.0f} s", flush=True)


def scratch_copy(run_dir: Path, scratch: Path) -> Path:
    copy = scratch / "run"
    copy.mkdir()
    for name in CHECKPOINT_FILES:
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, copy / name)
    return copy


def main() -> None:
    p = C.parser("charlm-tui sample start-up: the numpy sidecar vs the Keras path.")
    p.add_argument("--run", default=None, help="a trained run directory (default: train one first)")
    p.add_argument("--train-steps", type=int, default=300, help="steps to train when no --run is given")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--length", type=int, default=400)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    if args.quick:
        args.train_steps, args.rounds = 20, 2

    with tempfile.TemporaryDirectory(prefix="charlm-sample-startup-") as scratch_name:
        scratch = Path(scratch_name)
        run_dir = Path(args.run) if args.run else scratch / "trained"
        if not args.run:
            train_run(C.corpus_path(args.corpus), run_dir, args.train_steps)
        run = scratch_copy(run_dir, scratch)
        sidecar = run / "model.sampler.npz"
        sample = [sys.executable, "-m", "tui.cli", "sample", "--run", str(run), "--length", str(args.length),
                  "--seed", str(args.seed)]
        import_tf = [sys.executable, "-c", "import tensorflow"]

        def keras_path() -> dict:
            sidecar.unlink(missing_ok=True)  # the run as it was before sidecars; this run rebuilds it
            result = measure(sample, scratch / "keras.txt")
            assert sidecar.exists(), "the Keras path did not rebuild the sidecar"
            return result

        def sidecar_path() -> dict:
            assert sidecar.exists()
            return measure(sample, scratch / "sidecar.txt")

        keras_path(), sidecar_path()  # warm-up: page cache, and the sidecar of a run without one
        rounds = []
        for r in range(args.rounds):
            order = (keras_path, sidecar_path) if r % 2 == 0 else (sidecar_path, keras_path)
            figures = {function.__name__: function() for function in order}
            same = (scratch / "keras.txt").read_bytes() == (scratch / "sidecar.txt").read_bytes()
            figures["import_tensorflow"] = measure(import_tf, scratch / "import.txt")
            figures["same_text"] = same
            rounds.append(figures)
            via_sidecar, via_keras = figures["sidecar_path"], figures["keras_path"]
            print(f"  round {r + 1}: sidecar {via_sidecar['seconds']:.2f} s "
                  f"(CPU {via_sidecar['cpu_seconds']:.2f} s) {via_sidecar['peak_mb']:.0f} MB; "
                  f"Keras {via_keras['seconds']:.2f} s (CPU {via_keras['cpu_seconds']:.2f} s) "
                  f"{via_keras['peak_mb']:.0f} MB; import tensorflow "
                  f"{figures['import_tensorflow']['seconds']:.2f} s; same text: {same}", flush=True)
        model_bytes = (run / "model.keras").stat().st_size
        sidecar_bytes = sidecar.stat().st_size

    medians = {path: {figure: statistics.median(r[path][figure] for r in rounds)
                      for figure in ("seconds", "cpu_seconds", "peak_mb")}
               for path in ("sidecar_path", "keras_path", "import_tensorflow")}
    fast, slow = medians["sidecar_path"], medians["keras_path"]
    same_text = all(r["same_text"] for r in rounds)
    met = fast["seconds"] < GOAL_SECONDS and fast["peak_mb"] < GOAL_MB and same_text
    print()
    print(C.table([[label, f"{medians[path]['seconds']:.2f}", f"{medians[path]['cpu_seconds']:.2f}",
                    f"{medians[path]['peak_mb']:.0f}"]
                   for label, path in (("sidecar (numpy only)", "sidecar_path"),
                                       ("Keras (TensorFlow)", "keras_path"),
                                       ("python -c 'import tensorflow'", "import_tensorflow"))],
                  [f"sample --length {args.length}", "wall s (median)", "CPU s (median)",
                   "peak MB (median)"]))
    print(f"speed-up {slow['seconds'] / fast['seconds']:.0f}x, "
          f"memory 1/{slow['peak_mb'] / fast['peak_mb']:.1f}; "
          f"same text for the same --seed in every round: {same_text}; model.keras {model_bytes:,} bytes, "
          f"model.sampler.npz {sidecar_bytes:,} bytes")
    print(f"goal < {GOAL_SECONDS} s and < {GOAL_MB} MB: {'met' if met else 'NOT met'}")
    C.save("sample_startup", {
        "environment": {"python": sys.version.split()[0], "numpy": metadata.version("numpy"),
                        "tensorflow": metadata.version("tensorflow"), "keras": metadata.version("keras"),
                        "cpus": os.cpu_count(), "loadavg_end": list(os.getloadavg())},
        "run": args.run, "train_steps": None if args.run else args.train_steps, "length": args.length,
        "seed": args.seed, "rounds": rounds, "medians": medians, "same_text": same_text,
        "model_keras_bytes": model_bytes, "sidecar_bytes": sidecar_bytes,
        "goal": {"seconds": GOAL_SECONDS, "peak_mb": GOAL_MB}, "met": met}, args.out)


if __name__ == "__main__":
    main()
