"""What the app costs training: headless `charlm-tui train` against the app in a real
terminal (tmux, on a socket of its own), alternately, on the same corpus, settings
(the default preset, per-epoch samples on) and time budget, several rounds; the median
ratio of the training throughput a user gets.

Throughput is read from each run's own metrics.jsonl: target chars trained per wall
second, from the first row after `--skip` seconds of the run's clock to its last
interval row, epoch ends (held-out scoring, checkpoint, the trainer's samples, and
whatever the app does then) included. Left out: start-up and TensorFlow's import (the
run's clock starts after them), the first `--skip` seconds (the first step's tracing),
and the final scoring and save after the budget. The app runs with everything on: the
plot, the four streaming columns, a generation round after every epoch. Ratio =
app / headless: 1.0 means the UI costs nothing; the goal is >= 0.90. Each run's epoch
ends are printed too (seconds each, the training steps inside the gap taken off at the
run's own rate), so a stall in one of them shows.

    .venv/bin/python bench/ui_overhead.py [--rounds 3] [--seconds 50] [--corpus PATH]
    .venv/bin/python bench/ui_overhead.py --profile   # py-spy on the app while it trains
"""

from __future__ import annotations

import itertools
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import DEFAULT_CORPUS, ROOT, environment, parser, save, table

CLI = [sys.executable, "-m", "tui.cli"]


def metrics(run_dir: Path) -> list[dict]:
    text = (run_dir / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def throughput(rows: list[dict], skip: float) -> float:
    """Target chars per wall second as a user gets them: from the first interval row at
    or after `skip` seconds of the run's clock to the last one, epoch ends and all."""
    rows = [row for row in rows if row.get("kind") == "interval" and row["wall"] >= skip]
    if len(rows) < 2:
        raise RuntimeError(f"too few metrics rows after {skip} s")
    first, last = rows[0], rows[-1]
    return (last["chars"] - first["chars"]) / (last["wall"] - first["wall"])


def within_epochs(rows: list[dict], skip: float) -> tuple[float, float]:
    """(target chars, steps) per second over the steps between interval rows of the same
    epoch: the speed of training alone, epoch ends left out."""
    rows = [row for row in rows if row.get("kind") == "interval" and row["wall"] >= skip]
    pairs = [(a, b) for a, b in itertools.pairwise(rows) if a["epoch"] == b["epoch"]]
    if not pairs:
        raise RuntimeError(f"too few metrics rows after {skip} s")
    seconds = sum(b["wall"] - a["wall"] for a, b in pairs)
    return (sum(b["chars"] - a["chars"] for a, b in pairs) / seconds,
            sum(b["step"] - a["step"] for a, b in pairs) / seconds)


def epoch_ends(rows: list[dict]) -> list[float]:
    """Seconds each epoch end took: the gap between an epoch's last interval row and the
    next epoch's first, less the training steps inside it (the rows are every `log_every`
    steps, not at the epoch's edges) at the speed of the steps just before and after it
    (a loaded machine's speed drifts within a run)."""
    rows = [row for row in rows if row.get("kind") == "interval"]
    spans = list(itertools.pairwise(rows))
    ends = []
    for index, (a, b) in enumerate(spans):
        if b["epoch"] != a["epoch"] + 1:
            continue
        around = [(c, d) for c, d in spans[max(index - 1, 0):index + 2] if c["epoch"] == d["epoch"]]
        if not around:
            continue
        steps_per_second = sum(d["step"] - c["step"] for c, d in around) / sum(d["wall"] - c["wall"]
                                                                               for c, d in around)
        ends.append(round((b["wall"] - a["wall"]) - (b["step"] - a["step"]) / steps_per_second, 2))
    return ends


def measure(run_dir: Path, skip: float) -> dict:
    rows = metrics(run_dir)
    return {"throughput": throughput(rows, skip), "within_epochs": within_epochs(rows, skip)[0],
            "epoch_ends": epoch_ends(rows)}


def run_headless(corpus: str, run_dir: Path, seconds: float) -> Path:
    subprocess.run([*CLI, "train", "--corpus", corpus, "--run", str(run_dir), "--time-budget", str(seconds)],
                   cwd=ROOT, check=True, capture_output=True, timeout=seconds + 300)
    return run_dir


def run_app(corpus: str, run_dir: Path, seconds: float, profile: Path | None = None,
            gil: bool = False) -> Path:
    """The app in tmux at 120x40; `q` once the run has finished its budget. `profile`:
    py-spy records it from its first metrics row on: every thread, idle ones too, or with
    `gil` only the thread holding the GIL (what the others wait for)."""
    socket = Path(tempfile.gettempdir()) / f"charlm-bench-{uuid.uuid4().hex[:8]}.sock"
    tmux = ["tmux", "-S", str(socket)]
    app = [*CLI, "--corpus", corpus, "--run", str(run_dir), "--time-budget", str(seconds)]
    command = f"cd {shlex.quote(str(ROOT))} && TERM=xterm-256color {shlex.join(app)}"
    subprocess.run([*tmux, "new-session", "-d", "-s", "bench", "-x", "120", "-y", "40", command], check=True)
    metrics_file = run_dir / "metrics.jsonl"
    spy = None
    try:
        deadline = time.monotonic() + seconds + 300
        if profile is not None:
            while not metrics_file.exists() and time.monotonic() < deadline:
                time.sleep(0.2)  # past TensorFlow's import: training has begun
            spy = subprocess.Popen([py_spy(), "record", "--pid", app_pid(run_dir), "--threads",
                                    "--gil" if gil else "--idle", "--rate", "50", "--format", "speedscope",
                                    "--duration", str(int(seconds + 5)), "-o", str(profile)])
        while time.monotonic() < deadline:
            if metrics_file.exists() and '"kind": "end"' in metrics_file.read_text()[-600:]:
                break
            time.sleep(0.5)
        subprocess.run([*tmux, "send-keys", "-t", "bench", "q"], check=True)
        time.sleep(3)
    finally:
        if spy is not None:
            spy.wait(timeout=120)
        subprocess.run([*tmux, "kill-server"], check=False, capture_output=True)
        socket.unlink(missing_ok=True)
    return run_dir


def app_pid(run_dir: Path) -> str:
    """The app's Python process (not the shell tmux started it with)."""
    pids = subprocess.run(["pgrep", "-f", "--", f"--run {run_dir}"], check=False, capture_output=True,
                          text=True).stdout
    return next(pid for pid in pids.split()
                if b"python" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0])


def py_spy() -> str:
    found = shutil.which("py-spy") or Path(sys.executable).with_name("py-spy")
    if not Path(found).exists():
        sys.exit("py-spy is needed for --profile: .venv/bin/pip install py-spy")
    return str(found)


def ends(seconds: list[float]) -> str:
    return ", ".join(f"{s:.1f}" for s in seconds) or "none"


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=50.0, help="training budget of each run")
    p.add_argument("--skip", type=float, default=10.0, help="seconds of each run's clock not measured")
    p.add_argument("--profile", action="store_true", help="one app run under py-spy (speedscope JSON)")
    p.add_argument("--gil", action="store_true", help="--profile only the thread holding the GIL")
    args = p.parse_args()
    if shutil.which("tmux") is None:
        sys.exit("tmux is needed: apt-get install tmux")
    corpus = args.corpus or DEFAULT_CORPUS
    seconds = 20.0 if args.quick else args.seconds
    work = Path(tempfile.mkdtemp(prefix="charlm-ui-overhead-"))
    if args.profile:
        out = ROOT / "bench" / "results" / "ui_profile.speedscope.json"
        out.parent.mkdir(exist_ok=True)
        profiled = run_app(corpus, work / "profiled", seconds, profile=out, gil=args.gil)
        measured = measure(profiled, args.skip)
        print(f"profile: {out} (open it at speedscope.app); under py-spy the app trained "
              f"{measured['throughput']:,.0f} target chars/s ({measured['within_epochs']:,.0f} within "
              f"epochs); epoch ends {ends(measured['epoch_ends'])} s")
        shutil.rmtree(work, ignore_errors=True)
        return
    rounds = []
    for number in range(1 if args.quick else args.rounds):
        # Alternate which goes first, so a drift in the machine's load hits both alike.
        order = ("headless", "app") if number % 2 == 0 else ("app", "headless")
        result = {}
        for kind in order:
            run_dir = work / f"{kind}-{number}"
            run = run_headless if kind == "headless" else run_app
            result[kind] = measure(run(corpus, run_dir, seconds), args.skip)
        result["ratio"] = result["app"]["throughput"] / result["headless"]["throughput"]
        rounds.append(result)
        print(f"round {number + 1}: app/headless {result['ratio']:.3f}", flush=True)
        for kind in ("headless", "app"):
            print(f"  {kind:8} {result[kind]['throughput']:,.0f} target chars/s "
                  f"({result[kind]['within_epochs']:,.0f} within epochs); "
                  f"epoch ends {ends(result[kind]['epoch_ends'])} s", flush=True)
    ratio = statistics.median(r["ratio"] for r in rounds)
    print(table([[f"{i + 1}", f"{r['headless']['throughput']:,.0f}", f"{r['app']['throughput']:,.0f}",
                  f"{r['ratio']:.3f}", ends(r["headless"]["epoch_ends"]), ends(r["app"]["epoch_ends"])]
                 for i, r in enumerate(rounds)] + [["median", "", "", f"{ratio:.3f}", "", ""]],
                ["round", "headless chars/s", "app chars/s", "app/headless", "headless epoch ends s",
                 "app epoch ends s"]))
    print(f"(target chars per wall second after the first {args.skip:g} s of each run's clock, epoch ends "
          "included; start-up and TensorFlow's import left out)")
    save("ui_overhead", {"rounds": rounds, "median_ratio": ratio, "seconds": seconds, "skip": args.skip,
                         "corpus": corpus, **environment()}, args.out)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
