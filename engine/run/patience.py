"""An early stop: a run ends at its best rather than past it.

While the learning rate is held at its peak the held-out loss may pause for a few
epochs and then fall again once the rate decays, so nothing is counted then. Once the
rate decays (or a resumed session keeps the low rate it found), every epoch end that
does not improve on the run's best held-out loss counts; an improvement starts the
count again. After `epochs` of them the run stops. A run that stops there, or ends (its
epochs, --time-budget, --steps) on an epoch end past its best, is set back to the best
checkpoint's weights by the trainer: a session that only overfits (a finished run
trained for more epochs, measured in the README) ends where it began instead of above
it. A user's stop is left as it is: that run is resumed later, where it was.
"""

from __future__ import annotations


class Patience:
    """Counts the epoch ends without a new best while the rate decays; `epochs` 0: never stops."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.waited = 0

    def epoch_end(self, *, improved: bool, decaying: bool) -> bool:
        """Whether the run should stop at this epoch end."""
        if not self.epochs or improved or not decaying:
            self.waited = 0
            return False
        self.waited += 1
        return self.waited >= self.epochs

    @property
    def past_best(self) -> bool:
        """Whether the last epoch end was past the run's best while the rate decayed: a run
        that ends there ends at its best checkpoint's weights."""
        return self.waited > 0
