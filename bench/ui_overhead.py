"""What the app costs training: headless `charlm-tui train` against the app in a real
terminal (tmux, on a socket of its own), alternately, on the same corpus, preset and
time budget, several rounds; the median ratio of their training throughput.

Throughput is read from each run's own metrics.jsonl after `--skip` seconds of training
(target chars / training seconds, over the intervals within an epoch), so start-up,
TensorFlow's import and the epoch ends (the same work in both) do not count. The app runs with
everything on: the plot, the four streaming columns, a generation round after every
epoch. Ratio = app / headless: 1.0 means the UI costs nothing; the goal is >= 0.90.

    .venv/bin/python bench/ui_overhead.py [--rounds 3] [--seconds 50] [--corpus PATH]
    .venv/bin/python bench/ui_overhead.py --profile   # py-spy on the app while it trains
"""

from __future__ import annotations

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


def throughput(run_dir: Path, skip: float) -> float:
    """Target chars per training second after the first `skip` seconds, from metrics.jsonl,
    summed over the steps between consecutive interval rows of the same epoch: the epoch
    ends (held-out scoring, checkpoint, the trainer's own samples) cost headless and the app
    alike and land in a run's few measured seconds unevenly, so they are left out; the
    app's streaming rounds, drawn while the next epoch trains, stay in."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [row for row in rows if row.get("kind") == "interval" and row["wall"] >= skip]
    pairs = [(a, b) for a, b in zip(rows, rows[1:]) if a["epoch"] == b["epoch"]]
    if not pairs:
        raise RuntimeError(f"too few metrics rows after {skip} s in {run_dir}")
    return sum(b["chars"] - a["chars"] for a, b in pairs) / sum(b["wall"] - a["wall"] for a, b in pairs)


def run_headless(corpus: str, run_dir: Path, seconds: float) -> float:
    subprocess.run([*CLI, "train", "--corpus", corpus, "--run", str(run_dir), "--time-budget", str(seconds),
                    "--length", "400"], cwd=ROOT, check=True, capture_output=True, timeout=seconds + 300)
    return run_dir


def run_app(corpus: str, run_dir: Path, seconds: float, profile: Path | None = None) -> Path:
    """The app in tmux at 120x40; `q` once the run has finished its budget."""
    socket = Path(tempfile.gettempdir()) / f"charlm-bench-{uuid.uuid4().hex[:8]}.sock"
    tmux = ["tmux", "-S", str(socket)]
    app = [*CLI, "--corpus", corpus, "--run", str(run_dir), "--time-budget", str(seconds)]
    command = f"cd {shlex.quote(str(ROOT))} && TERM=xterm-256color {shlex.join(app)}"
    subprocess.run([*tmux, "new-session", "-d", "-s", "bench", "-x", "120", "-y", "40", command], check=True)
    spy = None
    try:
        if profile is not None:
            time.sleep(15)  # past TensorFlow's import and the first traces
            pid = subprocess.run(["pgrep", "-f", "--", f"--run {run_dir}"], capture_output=True,
                                 text=True).stdout.split()
            pid = [p for p in pid if b"python" in Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0]][0]
            spy = subprocess.Popen([shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")), "record", "--pid", pid, "--threads", "--idle", "--format",
                                    "speedscope", "--duration", str(int(seconds - 20)), "-o", str(profile)])
        deadline = time.monotonic() + seconds + 300
        metrics = run_dir / "metrics.jsonl"
        while time.monotonic() < deadline:
            if metrics.exists() and '"kind": "end"' in metrics.read_text()[-600:]:
                break
            time.sleep(0.5)
        subprocess.run([*tmux, "send-keys", "-t", "bench", "q"], check=True)
        time.sleep(3)
    finally:
        if spy is not None:
            spy.wait(timeout=120)
        subprocess.run([*tmux, "kill-server"], capture_output=True)
        socket.unlink(missing_ok=True)
    return run_dir


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=50.0, help="training budget of each run")
    p.add_argument("--skip", type=float, default=10.0, help="seconds of each run not measured")
    p.add_argument("--profile", action="store_true", help="one app run under py-spy (speedscope JSON)")
    args = p.parse_args()
    if shutil.which("tmux") is None:
        sys.exit("tmux is needed: apt-get install tmux")
    corpus = args.corpus or DEFAULT_CORPUS
    seconds = 20.0 if args.quick else args.seconds
    work = Path(tempfile.mkdtemp(prefix="charlm-ui-overhead-"))
    if args.profile:
        out = ROOT / "bench" / "results" / "ui_profile.speedscope.json"
        out.parent.mkdir(exist_ok=True)
        run_app(corpus, work / "profiled", seconds, profile=out)
        print(f"profile: {out} (open it at speedscope.app); app throughput "
              f"{throughput(work / 'profiled', args.skip):,.0f} target chars/s under py-spy")
        return
    rounds = []
    for number in range(1 if args.quick else args.rounds):
        # Alternate which goes first, so a drift in the machine's load hits both alike.
        order = ("headless", "app") if number % 2 == 0 else ("app", "headless")
        result = {}
        for kind in order:
            run_dir = work / f"{kind}-{number}"
            (run_headless if kind == "headless" else run_app)(corpus, run_dir, seconds)
            result[kind] = throughput(run_dir, args.skip)
        result["ratio"] = result["app"] / result["headless"]
        rounds.append(result)
        print(f"round {number + 1}: headless {result['headless']:,.0f}, app {result['app']:,.0f} "
              f"target chars/s: app/headless {result['ratio']:.3f}", flush=True)
    ratio = statistics.median(r["ratio"] for r in rounds)
    print(table([[f"{i + 1}", f"{r['headless']:,.0f}", f"{r['app']:,.0f}", f"{r['ratio']:.3f}"]
                 for i, r in enumerate(rounds)] + [["median", "", "", f"{ratio:.3f}"]],
                ["round", "headless chars/s", "app chars/s", "app/headless"]))
    save("ui_overhead", {"rounds": rounds, "median_ratio": ratio, "seconds": seconds, "skip": args.skip,
                         "corpus": corpus, **environment()}, args.out)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
