"""The checkpoints of a training run, and what happens when the run directory cannot take one.

A Checkpointer writes the model and state.json at the times the trainer asks, keeps the
best epoch-end checkpoint (model.best.keras) and every Nth one (--keep-every), rolls the
model back to the last checkpoint after a NaN, saves it elsewhere (a rescue folder) when
the run directory refuses the last one, and makes the run directory again when it was
deleted or moved while training (rm -rf RUN): nothing is ever written into a directory
whose lock this process does not hold.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from engine import events
from engine.errors import RunDirError, TrainingError
from engine.files import checkpoints
from engine.files.rundir import RunDir, save_rescue_run
from engine.run.clock import TrainingClock


class Checkpointer:
    """Checkpoints of one run in `rundir` (only the chief writes: other workers' weights are
    the same). `write_run_files(run)` writes vocab.json and config.json into a RunDir;
    `report(event)` is told of checkpoints and of notices."""

    def __init__(self, rundir: RunDir, *, chief: bool, corpus_path: str | None,
                 write_run_files: Callable[[RunDir], None], report: Callable[[events.Event], None],
                 batches_per_epoch: int, targets_per_step: int, keep_every: int, keep_max: int) -> None:
        self.rundir, self.chief, self.corpus_path = rundir, chief, corpus_path
        self.write_run_files, self.report = write_run_files, report
        self.batches_per_epoch, self.targets_per_step = batches_per_epoch, targets_per_step
        self.keep_every, self.keep_max = keep_every, keep_max
        self.error: RunDirError | None = None  # the last checkpoint's failure (None: it was saved)
        self.rescue_dir: Path | None = None      # where the model went when the run directory refused it
        self.abandoned = False                   # the process is leaving: the directory is not taken again
        self._best_val_loss: float | None = None  # the lowest held-out loss kept as model.best.keras

    def notice(self, message: str) -> None:
        self.report(events.Notice(message))

    # -- the run directory, while training --------------------------------------------------
    def reclaim(self) -> None:
        """Write only into a run directory whose lock this process holds. If it was deleted
        or moved away while training (rm -rf RUN), make it again, lock it and write
        vocab.json and config.json, so the checkpoint that follows lands in a run that
        resumes; raises RunDirError when that cannot be done (the path is a file now,
        another process took it...)."""
        rundir = self.rundir
        if not self.chief or rundir.holds_lock():
            return
        if self.abandoned:
            raise RunDirError(f"{rundir.path} was released: the process is leaving")
        existed = rundir.path.is_dir()
        rundir.release()
        rundir.check_can_train(self.corpus_path)
        rundir.acquire()
        self.write_run_files(rundir)
        if existed:
            self.notice(f"{rundir.lock_path} was removed or replaced during training; took the lock again")
        else:
            self.notice(f"{rundir.path} was deleted or moved during training; made it again, and the "
                        "checkpoints go on there (metrics and samples written before are not in it)")

    def log(self, row: dict) -> None:
        """Append a metrics.jsonl row; metrics are a log: losing a line must not stop training."""
        try:
            self.reclaim()
            self.rundir.append_metrics(row)
        except RunDirError as error:
            self.notice(str(error))

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, model, step: int, clock: TrainingClock, epoch: int) -> bool:
        """Save the model and state.json; on failure say so and go on (the weights are still
        in memory, and the next checkpoint retries). Whether it was saved."""
        if not self.chief:  # the chief's checkpoint has the same weights
            return True
        try:
            self.reclaim()
            checkpoints.save_model(self.rundir, model)
            self.rundir.write_state(self.state(step, epoch, clock))
        except RunDirError as error:
            self.notice(f"{error}; training goes on and the next checkpoint will retry")
            self.error = error
            return False
        self.error = None
        self.report(events.CheckpointSaved(str(self.rundir.model_path), step, epoch))
        return True

    def save_now(self, model) -> None:
        """Save the model now (a retry after a failed checkpoint): raises RunDirError if it
        fails again, with the weights still in memory."""
        step = int(model.optimizer.iterations.numpy())
        self.reclaim()
        checkpoints.save_model(self.rundir, model)
        self.error = None
        epoch = step // self.batches_per_epoch + 1
        self.report(events.CheckpointSaved(str(self.rundir.model_path), step, epoch))

    def save_epoch_end(self, model, step: int, clock: TrainingClock, epoch: int, val_loss) -> bool:
        """The epoch-end checkpoint; if its held-out loss is the lowest yet, it is kept
        as model.best.keras too (with the loss in state.json, so a resumed run knows), and
        every `keep_every`th epoch's is kept as model.epoch-NNNN.keras. Returns whether it
        was kept as the new best."""
        previous_best = self.best_so_far()
        improved = (self.chief and val_loss is not None and math.isfinite(val_loss)
                    and val_loss < previous_best)
        if improved:
            self._best_val_loss = val_loss  # written into state.json by the checkpoint
        if not self.save(model, step, clock, epoch):
            self._best_val_loss = previous_best
            return False
        if improved:
            try:
                checkpoints.keep_best(self.rundir)
            except RunDirError as error:  # the latest checkpoint is saved: say so, carry on
                self._best_val_loss = previous_best
                self.notice(str(error))
                improved = False
        every = self.keep_every
        if self.chief and every and epoch % every == 0 and step % self.batches_per_epoch == 0:
            try:
                checkpoints.keep_epoch(self.rundir, epoch, self.keep_max)
            except RunDirError as error:
                self.notice(str(error))
        return improved

    def set_back_to_best(self, model, step: int, clock: TrainingClock, epoch: int) -> bool:
        """An early stop (engine/run/patience.py): the best checkpoint's weights into `model`
        (the optimizer and its step stay), saved as the latest checkpoint. False, with a
        notice, where the best cannot be read: the latest weights then stay as they are."""
        try:
            model.set_weights(checkpoints.best_weights(self.rundir))
        except RunDirError as error:
            self.notice(f"{error}; the run keeps its latest weights")
            return False
        return self.save(model, step, clock, epoch)

    def best_so_far(self) -> float:
        if self._best_val_loss is None:  # a resumed run's best so far, if it kept one
            state = self.rundir.load_state() if self.rundir.best_model_path.exists() else {}
            self._best_val_loss = state.get("best_val_loss", math.inf)
        return self._best_val_loss

    def state(self, step: int, epoch: int, clock: TrainingClock) -> dict:
        state = {"step": step, "epoch": epoch, "elapsed": clock.elapsed,
                 "chars": step * self.targets_per_step}
        if self.chief and math.isfinite(self.best_so_far()):
            state["best_val_loss"] = self._best_val_loss
        return state

    def abandon(self, elapsed: float | None) -> int | None:
        """The process must leave while the training thread is stuck: the end row, with the
        step of the last checkpoint (`elapsed`: seconds trained, None if not known), and the
        run directory released for good. Returns that step (None: no checkpoint yet)."""
        rundir, step = self.rundir, None
        if self.chief and rundir.acquired:
            try:
                state = rundir.load_state() if rundir.has_checkpoint() else {}
            except RunDirError:
                state = {}
            step = state.get("step") if isinstance(state.get("step"), int) else None
            wall = elapsed if elapsed is not None else state.get("elapsed", 0.0)
            at = step or 0
            row = {"kind": "end", "epoch": at // self.batches_per_epoch, "step": at, "wall": round(wall, 3),
                   "chars": at * self.targets_per_step, "train_loss": None, "val_loss": None,
                   "reason": "stopped", "abandoned": True}
            try:
                rundir.append_metrics(row)
            except RunDirError:
                pass  # a log: the checkpoint is what matters, and it is whole
        self.abandoned = True  # (before the release: the stuck thread must not take it again)
        rundir.release()
        return step

    # -- when things go wrong ---------------------------------------------------------------------
    def rescue(self, model, step: int, clock: TrainingClock) -> None:
        """The last checkpoint could not be written to the run directory: save the model as
        a complete run somewhere safe, and say where in `error` (left as it was if that
        fails too: it says already that the checkpoint was not saved)."""
        epoch = step // self.batches_per_epoch + 1

        def save(rescue: RunDir) -> None:
            self.write_run_files(rescue)
            checkpoints.save_model(rescue, model)
            rescue.write_state(self.state(step, epoch, clock))

        try:
            self.rescue_dir = save_rescue_run(save)
        except RunDirError:
            return
        self.error = RunDirError(
            f"{self.error}; the model was saved in {self.rescue_dir} instead (charlm-tui sample "
            f"--run {self.rescue_dir}, or copy its files back)")
        self.notice(str(self.error))

    def roll_back(self, failure: str, lr: float, set_model: Callable[[object], None]) -> None:
        """After a NaN: `set_model` gets the last checkpoint's model, if there is one; then
        TrainingError says what happened and what to try."""
        if self.rundir.has_checkpoint():
            model = checkpoints.load_model(self.rundir, compile=True, on_notice=self.notice)
            set_model(model)
            where = f"rolled back to the last checkpoint (step {int(model.optimizer.iterations.numpy()):,})"
        else:
            where = "no checkpoint was saved yet"
        raise TrainingError(f"{failure}; {where}; try a lower learning rate (--lr {lr / 4:g}) "
                            "or gradient clipping")
