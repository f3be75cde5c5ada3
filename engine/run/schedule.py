"""The learning rate over a run: a pure function of how far the run has come.

"cosine" (the fast preset): a linear warm-up over the first `warmup_steps`, `lr` held
until `decay_start` of the run, then a half-cosine from `lr` down to `lr * lr_floor` at
the end of the run as planned, i.e. the first of its last epoch, `--steps` and
`--time-budget` to come (nanoGPT decays to its `max_iters`). Holding the rate first, as
warmup-stable-decay schedules do, keeps the fast early learning of a short run; the
decay tied to the run's length lets it end at a low rate instead of a noisy high one. "constant" (the book) keeps `lr` throughout.
"""

from __future__ import annotations

import math

from engine.config import TrainConfig


def fraction_done(config: TrainConfig, *, step: int, steps_per_epoch: int, session_steps: int,
                  session_seconds: float) -> float:
    """How far through its planned length the run is, 0 to 1: the furthest of the three
    limits (the epochs count the run's steps, --steps and --time-budget this session's)."""
    fractions = [step / (config.epochs * steps_per_epoch)] if steps_per_epoch else []
    if config.steps:
        fractions.append(session_steps / config.steps)
    if config.time_budget:
        fractions.append(session_seconds / config.time_budget)
    return min(1.0, max(fractions, default=0.0))


def learning_rate(config: TrainConfig, step: int, fraction: float) -> float:
    """The rate for the optimizer step after `step` steps, `fraction` of the way through."""
    if config.schedule == "constant":
        return config.lr
    warmup = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    decayed = (min(1.0, max(0.0, fraction)) - config.decay_start) / (1.0 - config.decay_start)
    cosine = 0.5 * (1.0 + math.cos(math.pi * max(0.0, decayed)))
    return config.lr * warmup * (config.lr_floor + (1.0 - config.lr_floor) * cosine)
