"""What XLA buys a training step on this CPU: the fast preset's model with one and with two
LSTM layers, Keras's default on a CPU-only machine (no XLA) against `jit_compile=True`,
alternating rounds, the median milliseconds per step and their ratio.

    .venv/bin/python bench/xla_cpu.py [--rounds 3] [--steps 40]

The engine turns XLA on for stacked LSTMs on a CPU (engine.modeling.model.use_xla_for_stacked_lstms)
because of these figures; one layer gains too little to pay for the compile.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from common import environment, parser, save, table


def step_seconds(layers: int, xla: bool, steps: int, rounds: int) -> list[float]:
    from engine.config import preset
    from engine.modeling.model import build_model

    config = preset("fast", layers=layers)
    model = build_model(57, config)
    model.jit_compile = xla
    rng = np.random.default_rng(0)
    x = rng.integers(0, 57, size=(config.batch_size * steps, config.maxlen)).astype("int32")
    y = rng.integers(0, 57, size=x.shape).astype("int32")
    model.fit(x[: config.batch_size * 3], y[: config.batch_size * 3], batch_size=config.batch_size,
              verbose=0)  # traces (and compiles) outside the timing
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        model.fit(x, y, batch_size=config.batch_size, verbose=0)
        times.append((time.perf_counter() - start) / steps)
    return times


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=40, help="training steps per timed round")
    args = p.parse_args()
    rounds, steps = (1, 10) if args.quick else (args.rounds, args.steps)
    rows, result = [], {"steps": steps, "rounds": rounds, **environment()}
    for layers in (1, 2):
        timed = {False: [], True: []}
        for number in range(rounds):  # alternate which goes first
            for xla in ((False, True) if number % 2 == 0 else (True, False)):
                timed[xla] += step_seconds(layers, xla, steps, 1)
        plain, xla = statistics.median(timed[False]), statistics.median(timed[True])
        result[f"layers_{layers}"] = {"plain_ms": plain * 1e3, "xla_ms": xla * 1e3, "speedup": plain / xla}
        rows.append([f"{layers} x LSTM(128)", f"{plain * 1e3:.1f}", f"{xla * 1e3:.1f}",
                     f"{plain / xla:.2f}x"])
        print(rows[-1], flush=True)
    print(table(rows, ["model (fast preset)", "ms/step, no XLA", "ms/step, XLA", "speed-up"]))
    save("xla_cpu", result, args.out)


if __name__ == "__main__":
    main()
