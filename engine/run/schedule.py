"""The learning rate over a run: a pure function of how far the run has come.

"cosine" (the fast preset): a linear warm-up over the first `warmup_steps`, `lr` held
until `decay_start` of the run, then a half-cosine from `lr` down to `lr * lr_floor` at
the end of the run as planned, i.e. the first of its last epoch, `--steps` and
`--time-budget` to come (nanoGPT decays to its `max_iters`). Holding the rate first, as
warmup-stable-decay schedules do, keeps the fast early learning of a short run; the
decay tied to the run's length lets it end at a low rate instead of a noisy high one.
"constant" (the book) keeps `lr` throughout.

A resumed session never raises the rate it finds in the checkpoint: where that rate is
the plan's at the point it resumes from (a run stopped and resumed, even mid-warm-up),
the plan goes on; where the plan would raise it (the last session ended
decayed, at its own --time-budget or --steps), the session plans its own decay, from
the rate it found down to the floor at its own planned end. Training more then starts
where the run was, not at a peak that undoes what the decay gained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.config import TrainConfig

# A rate saved as float32 and set every few steps: "at or below" within this much.
RATE_TOLERANCE = 1e-3


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


@dataclass(frozen=True)
class Resumed:
    """Where a resumed session starts: the run's step, its fraction done then, the rate
    the checkpoint's optimizer holds, and at most how many steps before `step` that rate
    was set (the trainer sets it every few steps)."""

    step: int
    fraction: float
    rate: float
    lag: int = 0

    def follows_plan(self, config: TrainConfig) -> bool:
        """Whether the rate found is the plan's: then the plan goes on (a warm-up rises, as
        it was meant to); else the last session ended below it, decayed to its own end."""
        planned = planned_rate(config, max(0, self.step - self.lag), self.fraction)
        return planned <= self.rate * (1.0 + RATE_TOLERANCE)


def _half_cosine(fraction: float) -> float:
    """1 at 0, 0 at 1, following half a cosine."""
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, fraction))))


def planned_rate(config: TrainConfig, step: int, fraction: float) -> float:
    """The run's plan: the rate after `step` steps, `fraction` of the way through."""
    if config.schedule == "constant":
        return config.lr
    warmup = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    decayed = (min(1.0, max(0.0, fraction)) - config.decay_start) / (1.0 - config.decay_start)
    return config.lr * warmup * (config.lr_floor + (1.0 - config.lr_floor) * _half_cosine(decayed))


def learning_rate(config: TrainConfig, step: int, fraction: float, resumed: Resumed | None = None) -> float:
    """The rate for the optimizer step after `step` steps, `fraction` of the way through;
    `resumed`: where this session resumed the run (None: the run's first session)."""
    if config.schedule == "constant" or resumed is None or resumed.follows_plan(config):
        return planned_rate(config, step, fraction)
    floor = min(resumed.rate, config.lr * config.lr_floor)
    remaining = 1.0 - resumed.fraction
    own = (fraction - resumed.fraction) / remaining if remaining > 0 else 1.0
    return floor + (resumed.rate - floor) * _half_cosine(own)
