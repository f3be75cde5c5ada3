"""How fast the app answers a key while it trains (goal: within 100 ms; the inspector's
keys within 50 ms).

    .venv/bin/python bench/keypress_latency.py [--corpus PATH] [--presses 40]

Runs the real app (Textual's headless driver, 120x40) training the default fast model
on the corpus, waits until batches flow and text streams, then presses `k` (colour by
probability) again and again, `--gap` seconds apart, timing each press from the key event being posted to the
app state having changed. Then the inspector (issue 19): `i` opens it (timed until its
distribution is shown: the trace of the column is made on a thread), and ← is pressed
`--presses` times, each timed until the panel has moved and has the distribution of its
new character. Writes bench/results/keypress_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import DEFAULT_CORPUS  # noqa: E402  (the bench default: $CHARLM_BENCH_CORPUS, else nietzsche)
from tui.app import build_app  # noqa: E402
from tui.options import AppOptions  # noqa: E402


async def measure(corpus: str, presses: int, gap: float, run_dir: Path) -> tuple[list, tuple, list]:
    """([(k's answer, step)], (i's panel, i's figures), [(←'s answer, step)]), in seconds."""
    from textual import events

    app = build_app(AppOptions(corpus=corpus, run_dir=str(run_dir)))
    latencies, moves, opened = [], [], None
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            deadline = time.monotonic() + 180
            while app.training_pane.progress.step < 20 and time.monotonic() < deadline:
                await pilot.pause(0.2)  # TensorFlow import, tracing, first batches
            if app.training_pane.progress.step < 20:
                raise SystemExit("training did not start within 3 minutes")
            for _ in range(presses):
                before = app.generation_pane.colour
                started = time.perf_counter()
                app.post_message(events.Key("k", "k"))
                while app.generation_pane.colour == before:
                    await asyncio.sleep(0.0005)
                latencies.append((time.perf_counter() - started, app.training_pane.progress.step))
                await pilot.pause(gap)
            opened = await _open_inspector(app, pilot)
            moves = await _move_inspector(app, pilot, presses, gap)
            await pilot.press("escape", "q")
    finally:
        app.stop_threads(timeout=120)
    return latencies, opened, moves


def _panel(app):
    from tui.widgets.inspector import InspectorPanel

    panels = app.screen.query(InspectorPanel)
    return panels.first() if panels else None


async def _open_inspector(app, pilot) -> tuple[float, float]:
    """Seconds from `i` to the panel shown (saying it traces), and to its showing the
    distribution of the column's last character."""
    from textual import events

    pane = app.generation_pane
    while pane.round is None or len(pane.columns[0].chars) < 2:
        await pilot.pause(0.1)
    started = time.perf_counter()
    app.post_message(events.Key("i", "i"))
    while (panel := _panel(app)) is None or not panel.is_mounted:
        await asyncio.sleep(0.0005)
    shown = time.perf_counter() - started
    while panel.distribution() is None:
        await asyncio.sleep(0.0005)
    return shown, time.perf_counter() - started


async def _move_inspector(app, pilot, presses: int, gap: float) -> list[tuple[float, int]]:
    """← pressed `presses` times (at most to the column's first character), each timed."""
    from textual import events

    moves = []
    panel = _panel(app)
    for _ in range(min(presses, panel.position)):
        await pilot.pause(gap)  # (the first: after the panel's first layout and paint)
        before = panel.position
        started = time.perf_counter()
        app.post_message(events.Key("left", None))
        while panel.position == before or panel.distribution() is None:
            await asyncio.sleep(0.0005)
        moves.append((time.perf_counter() - started, app.training_pane.progress.step))
    return moves


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=DEFAULT_CORPUS,
                        help="a path or a named corpus; default: $CHARLM_BENCH_CORPUS, else nietzsche")
    parser.add_argument("--presses", type=int, default=40)
    parser.add_argument("--gap", type=float, default=0.5,
                        help="seconds between presses (0.5: 40 presses span an epoch end)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "keypress_latency.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        latencies, opened, moves = asyncio.run(measure(args.corpus, args.presses, args.gap,
                                                       Path(scratch) / "run"))
    ms = sorted(1000 * t for t, _ in latencies)
    moves_ms = sorted(1000 * t for t, _ in moves)
    result = {"benchmark": "keypress_latency", "command": " ".join(sys.argv), "presses": len(ms),
              "median_ms": round(statistics.median(ms), 1), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1),
              "max_ms": round(ms[-1], 1), "goal_ms": 100, "gap_s": args.gap,
              "presses_ms_at_step": [[round(1000 * t, 1), step] for t, step in latencies],
              "inspector": {"goal_ms": 50, "open_shown_ms": round(1000 * opened[0], 1),
                            "open_traced_ms": round(1000 * opened[1], 1), "moves": len(moves_ms),
                            "move_median_ms": round(statistics.median(moves_ms), 1) if moves_ms else None,
                            "move_max_ms": round(moves_ms[-1], 1) if moves_ms else None,
                            "moves_ms_at_step": [[round(1000 * t, 1), step] for t, step in moves]}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"key press answered while training: median {result['median_ms']} ms, p95 {result['p95_ms']} ms, "
          f"max {result['max_ms']} ms over {len(ms)} presses (goal < 100 ms)")
    inspector = result["inspector"]
    print(f"inspector while training: i shows the panel in {inspector['open_shown_ms']} ms, its figures in "
          f"{inspector['open_traced_ms']} ms (from the distributions the round kept as it drew); ← median "
          f"{inspector['move_median_ms']} ms, max {inspector['move_max_ms']} ms over {inspector['moves']} "
          "presses (goal <= 50 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
