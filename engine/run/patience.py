"""An early stop: a run ends at its best rather than past it.

Only the end of a run is watched. While the rate is high the held-out loss may pause,
or be beaten by one lucky epoch, and then fall again as the rate decays: a default run
stopped 3 epochs into its decay ended at 1.401 after 150 s instead of 1.387 after 300 s.
So epoch ends count only once the rate is down to `LATE` of its peak or less (the last
~15% of a cosine run, or a resumed session that keeps the low rate it found): every
epoch end then that does not improve on the run's best held-out loss counts, and an
improvement starts the count again. After `epochs` of them the run stops. A run that
stops there, or ends (its epochs, --time-budget, --steps) on an epoch end past its best,
is set back to the best checkpoint's weights by the trainer: a session that only
overfits (a finished run trained for more epochs, measured in the README) ends where it
began instead of above it. A user's stop is left as it is: that run is resumed later,
where it was.
"""

from __future__ import annotations

LATE = 0.25  # epoch ends count once the learning rate is at most this fraction of its peak


class Patience:
    """Counts the epoch ends without a new best late in a run; `epochs` 0: never stops."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.waited = 0

    def epoch_end(self, *, improved: bool, late: bool) -> bool:
        """Whether the run should stop at this epoch end; `late`: the rate is down to LATE
        of its peak or less (engine.run.callback's `late`)."""
        if not self.epochs or improved or not late:
            self.waited = 0
            return False
        self.waited += 1
        return self.waited >= self.epochs

    @property
    def past_best(self) -> bool:
        """Whether the last epoch end was late and past the run's best: a run that ends there
        ends at its best checkpoint's weights."""
        return self.waited > 0
