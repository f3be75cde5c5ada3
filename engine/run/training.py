"""The training loop: Keras `fit`, one epoch at a time, reporting plain events.

`Trainer.run()` blocks (call it on a worker thread from a UI). `stop()`, `pause()` and
`resume()` may be called from any thread; a stop is honoured after the current batch,
with a checkpoint saved first. The optimizer's step counter, saved in model.keras, is
the single source of truth for where a resumed run continues: epoch and batch follow
from it, because an epoch's shuffle is a pure function of (seed, epoch).

The pieces: engine/run/checkpointer.py (checkpoints, best, keep-every, rescue, rollback, a
deleted run directory), engine/run/callback.py (what happens at each batch end, through
the public control methods below), engine/run/clock.py (seconds of training),
engine/run/epochsamples.py (the samples after each epoch).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Callable

from engine import events
from engine.config import TrainConfig
from engine.data.corpus import Corpus
from engine.data.windows import Windows, check_length, count_windows, split_point
from engine.errors import RunDirError, TrainingError
from engine.files.rundir import RunDir
from engine.modeling.longcontext import long_context_loss_if_long_enough
from engine.modeling.model import heldout_loss, summary_text, use_xla_for_stacked_lstms
from engine.modeling.sampler import Sampler, reading_for
from engine.run.callback import Switches, progress_callback
from engine.run.checkpointer import Checkpointer
from engine.run.clock import TrainingClock
from engine.run.epochsamples import sample_round, samples_file
from engine.run.patience import Patience
from engine.run.runstart import RunStart
from engine.run.settings import RunSettings
from engine.scale import memory
from engine.scale.distribute import is_chief, make_strategy, set_precision, worker_label
from engine.scale.multiworker import NO_STOP, STOP_BUDGET, STOP_USER, WorkerLost
from engine.scale.tensorboard import TensorBoardLogger
from engine.tfsetup import device_name, keras


class Trainer(Switches):
    """Trains `corpus` in `run_dir`, resuming the run there unless `fresh`."""

    def __init__(self, corpus: Corpus, config: TrainConfig, run_dir,
                 on_event: Callable[[events.Event], None] | None = None, *,
                 fresh: bool = False, sample_each_epoch: bool = True, tensorboard_dir=None,
                 settings: RunSettings | None = None):
        """`settings`: what the session worked out for this run directory (its config.json
        is then not read again)."""
        config.validate()
        check_length(corpus, config)
        if config.lowercase != corpus.lowercase:  # the corpus says what is trained; config.json must too
            config = dataclasses.replace(config, lowercase=corpus.lowercase)
        self.corpus = corpus
        self.config = config
        self.chief, self.worker = True, ""  # False/"worker 1 of 2" for a multi-worker helper
        self._scratch: str | None = None
        if config.strategy == "multiworker":
            self.chief, self.worker = is_chief(), worker_label()
            if not self.chief:  # only the chief keeps the run; the others' bookkeeping is scratch
                run_dir = self._scratch = tempfile.mkdtemp(prefix="charlm-worker-")
                tensorboard_dir = None
        self.rundir = RunDir(run_dir)
        if settings is not None and settings.run_dir != self.rundir.path:
            settings = None  # (a multi-worker helper's scratch folder)
        self._settings = settings
        self.on_event = on_event or (lambda event: None)
        self.fresh = fresh
        self.sample_each_epoch = sample_each_epoch
        self.tensorboard_dir = tensorboard_dir
        self.model = None
        self._multiworker = None  # engine.scale.multiworker.MultiWorkerLoop under that strategy
        Switches.__init__(self)
        self._model_lock = threading.Lock()
        self._cut_windows()
        memory.check_machine_memory(len(corpus.vocab), config)  # before anything is built or written
        self.rundir.check_can_train(self._corpus_path())  # before anything is written there
        self.rundir.acquire()
        self.start = RunStart(self.rundir, corpus, fresh=fresh, chief=self.chief, notice=self._notice)
        self.checkpointer = Checkpointer(
            self.rundir, chief=self.chief, corpus_path=self._corpus_path(),
            write_run_files=self._write_run_files,
            report=self.report, batches_per_epoch=self.steps_per_epoch,
            targets_per_step=config.batch_size * config.targets_per_window,
            keep_every=config.keep_every, keep_max=config.keep_max)
        try:
            self.start.check_compatible(config, settings.saved if self._settings is not None else None)
        except BaseException:
            self.close()
            raise

    def _cut_windows(self) -> None:
        config, corpus = self.config, self.corpus
        split = split_point(len(corpus), config.val_fraction)
        self.train_ids, self.val_ids = corpus.ids[:split], corpus.ids[split:]
        self.train_windows = Windows(self.train_ids, config.maxlen, config.step, config.objective,
                                     config.batch_size, seed=config.seed)
        # Held-out windows: unshuffled, spaced so at most val_max_windows are scored, and
        # for the "all" objective only the positions with at least maxlen - step of context.
        val_step = max(config.step, math.ceil(len(self.val_ids) / config.val_max_windows))
        score_from = max(0, config.maxlen - val_step) if config.objective == "all" else 0
        self.val_windows = Windows(self.val_ids, config.maxlen, val_step, config.objective,
                                   config.batch_size, shuffle=False, score_from=score_from)

    @property
    def steps_per_epoch(self) -> int:
        return self.train_windows.batches_per_epoch

    # -- what the callback and the front ends use (engine.run.callback.RunControl) -------------------
    def report(self, event: events.Event) -> None:
        if isinstance(event, events.EpochEnd):
            self._epoch_row_step = event.step
        if self._tensorboard is not None:
            self._tensorboard(event)
        self.on_event(event)

    def log_metrics(self, *, kind: str, epoch: int, step: int, clock: TrainingClock,
                    train_loss: float | None, val_loss: float | None = None, **more) -> None:
        self.checkpointer.log({"kind": kind, "epoch": epoch, "step": step, "wall": round(clock.elapsed, 3),
                               "chars": step * self.config.batch_size * self.config.targets_per_window,
                               "train_loss": train_loss, "val_loss": val_loss, **more})

    def checkpoint(self, model, step: int, clock: TrainingClock, epoch: int) -> bool:
        return self.checkpointer.save(model, step, clock, epoch)

    def sampler(self):
        """A sampler holding a copy of the current weights (safe while training runs)."""
        with self._model_lock:
            if self.model is None:
                raise TrainingError("the model is not built yet")
            return Sampler.from_keras_model(self.model, self.corpus.vocab, lowercase=self.corpus.lowercase,
                                            reading=reading_for(self.config))

    def save_checkpoint(self) -> None:
        """Save the current weights now (a retry after a failed checkpoint, for example);
        raises RunDirError if it fails again, with the weights still in memory."""
        with self._model_lock:
            model = self.model
        if model is None:
            raise TrainingError("the model is not built yet")
        self.checkpointer.save_now(model)

    @property
    def checkpoint_error(self) -> RunDirError | None:
        return self.checkpointer.error

    # -- before the run ---------------------------------------------------------------------------
    def _corpus_path(self) -> str | None:
        """The file or folder the corpus was read from (None for a built-in one)."""
        source = self.corpus.source
        return source if os.path.exists(source) else None

    def _write_run_files(self, run: RunDir) -> None:
        self.start.write_run_files(run, self.config)

    def _prepare_model(self):
        if self.config.strategy == "multiworker":
            self._notice(f"{self.worker}: waiting for every worker named in TF_CONFIG (Ctrl-C gives up)")
        strategy = make_strategy(self.config.strategy)  # first: multi-worker set-up must precede other ops
        keras().utils.set_random_seed(self.config.seed)
        self.rundir.cleanup_temporaries()
        note = set_precision(self.config.mixed_precision)
        if note:
            self._notice(note)
        if self.config.strategy == "multiworker":
            chiefs, model, step, self._multiworker = self.start.multiworker_model(strategy, self.config)
            if chiefs != self.config:  # a helper takes the chief's settings (a resumed run's included)
                self.config = chiefs
                self._cut_windows()
            return model, step
        with strategy.scope():  # variables made inside it are mirrored across the strategy's devices
            return self.start.model(self.config)

    # -- the run ------------------------------------------------------------------------------------
    def run(self) -> events.TrainingFinished:
        try:
            return self._run()
        finally:
            if self._tensorboard is not None:
                self._tensorboard.close()
            self.close()

    def abandon(self) -> int | None:
        """From another thread, while this one is stuck in a step the process cannot wait
        for: the end row, with the step of the last checkpoint, and the run directory
        released (RunSession.abandon). Returns that step (None: no checkpoint yet)."""
        return self.checkpointer.abandon(self._clock.elapsed if self._clock is not None else None)

    def close(self) -> None:
        if self._clock is not None:
            self._clock.close()
        self.rundir.release()
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def _run(self) -> events.TrainingFinished:
        model, step = self._prepare_model()
        config = self.config  # a multi-worker helper has taken the chief's by now
        use_xla_for_stacked_lstms(model, config)  # (not under a strategy: Keras's choice stands)
        with self._model_lock:
            self.model = model
        if step:  # the resumed run may carry new run-length settings
            self.rundir.write_config(config, self.start.corpus_meta(config))
        per_epoch = self.steps_per_epoch
        clock = self._clock = TrainingClock(self.rundir.load_state().get("elapsed", 0.0) if step else 0.0)
        self.report(events.TrainingStarted(
            corpus_name=self.corpus.name, corpus_chars=len(self.corpus), vocab_size=len(self.corpus.vocab),
            windows_total=count_windows(len(self.corpus), config.maxlen, config.step),
            windows_train=self.train_windows.count, parameters=model.count_params(),
            model_summary=summary_text(model), device=device_name(), run_dir=self._run_label(),
            resumed_from_step=step, epoch=step // per_epoch + 1, steps_per_epoch=per_epoch,
            worker=self.worker, epochs=config.epochs, step_budget=config.steps,
            time_budget=config.time_budget, elapsed=clock.elapsed))
        # A watcher in another process turns these rows back into the same events.
        self.log_metrics(kind="start", epoch=step // per_epoch + 1, step=step, clock=clock, train_loss=None,
                         steps_per_epoch=per_epoch, epochs=config.epochs, step_budget=config.steps,
                         time_budget=config.time_budget)

        progress = progress_callback(self, clock, step, new_peak=self.start.new_peak(config))
        patience = Patience(config.patience)
        self._start_tensorboard()
        reason, train_loss, val_loss = "epochs", None, None
        if step // per_epoch >= config.epochs:
            self._notice(f"this run has done all its epochs ({config.epochs}): nothing to train "
                         f"(--epochs N, more than {config.epochs}, trains it on; the early stop still "
                         "ends it at its best)")
        while step // per_epoch < config.epochs:
            epoch, first_batch = divmod(step, per_epoch)
            progress.start_epoch(epoch + 1, first_batch)
            try:
                self._fit_epoch(model, epoch, first_batch, progress)
            except WorkerLost:  # keep what was learnt until then
                self.checkpoint(model, progress.step, clock, epoch + 1)
                raise
            step = progress.step
            if progress.failure:
                self.checkpointer.roll_back(progress.failure, self.config.lr, self._set_model)
            train_loss = progress.epoch_loss()
            reason = progress.stop_reason
            complete = step % per_epoch == 0
            stoppable = not self._multiworker  # (other workers hear of a stop with the next step)
            if stoppable and self.stopping:
                reason = "stopped"  # (also when it came with the epoch's last batch)
            if reason == "stopped":  # the user is waiting: checkpoint, no evaluation
                self.checkpoint(model, step, clock, epoch + 1)
                break
            val_loss = self.heldout_loss(stop=self.stop_event if stoppable else None) if self.chief else None
            if val_loss is None and stoppable and self.stopping:  # quit while scoring
                reason = "stopped"
                self.checkpoint(model, step, clock, epoch + 1)
                break
            self.report(events.EpochEnd(epoch + 1, step, train_loss, val_loss, clock.elapsed, complete))
            self.log_metrics(kind="epoch", epoch=epoch + 1, step=step, clock=clock,
                             train_loss=train_loss, val_loss=val_loss)
            improved = self.checkpointer.save_epoch_end(model, step, clock, epoch + 1, val_loss)
            # Stopped during the evaluation: saved, so stop now (other workers, already in
            # the next epoch, hear of it with its first step).
            if self.stopping and not self._multiworker:
                reason = "stopped"
                break
            if self._may_stop_early() and patience.epoch_end(improved=improved, late=progress.late):
                reason = "no_improvement"
                break
            if self.sample_each_epoch and config.sample_length and self.chief:
                self._sample_round(epoch + 1)
                if self.stopping and not self._multiworker:  # stopped while sampling: saved above
                    reason = "stopped"
            if reason:
                break
        else:
            reason = "epochs"
        if reason != "stopped" and patience.past_best and self._may_stop_early():
            val_loss = self._set_back_to_best(model, step, clock, reason, val_loss)
        clock.pause()
        if self.checkpoint_error is not None and self.chief:
            self.checkpointer.rescue(model, step, clock)
        return self._finish(reason or "epochs", step, train_loss, val_loss, clock, progress)

    def _may_stop_early(self) -> bool:
        """The early stop (engine/run/patience.py) needs the held-out loss (the chief's, on
        one process) and a saved checkpoint: while saving fails the best on disk is older
        than what training holds, and setting the weights back to it would lose work."""
        return self.chief and not self._multiworker and self.checkpoint_error is None

    def _set_back_to_best(self, model, step: int, clock: TrainingClock, reason: str, val_loss):
        """A run that ends past its best (engine/run/patience.py) ends with the weights of its
        best checkpoint, in the model and as its latest checkpoint. Returns the held-out
        loss it ends at: the best's, or `val_loss` where the best could not be read."""
        best = self.checkpointer.best_so_far()
        epoch = (step - 1) // self.steps_per_epoch + 1
        with self._model_lock:  # (a front end's sampler copies the weights under it)
            restored = self.checkpointer.set_back_to_best(model, step, clock, epoch)
        if not restored:
            return val_loss
        if reason == "no_improvement":
            self._notice(f"the held-out loss has not improved on the run's best ({best:.4f}) for "
                         f"{self.config.patience} epochs with the learning rate down to its last quarter: "
                         "stopped, with the weights of that best checkpoint (--patience 0 trains on)")
        else:
            last = "" if val_loss is None else f"; the last epoch's was {val_loss:.4f}"
            self._notice(f"the run ends with the weights of its best checkpoint (held-out {best:.4f}{last})")
        return best

    def _set_model(self, model) -> None:
        with self._model_lock:
            self.model = model

    def _fit_epoch(self, model, epoch: int, first_batch: int, progress) -> None:
        """Train from `first_batch` to the end of `epoch` (0-based), or until a stop."""
        dataset = self.train_windows.dataset(epoch, first_batch)
        batches = self.steps_per_epoch - first_batch
        if not self._multiworker:
            # initial_epoch/epochs: one epoch per call, numbered as callbacks expect
            model.fit(dataset, initial_epoch=epoch, epochs=epoch + 1, verbose=0, shuffle=False,
                      steps_per_epoch=batches, callbacks=[progress])
            return
        if self.config.steps is not None:  # every worker must end on the same batch
            batches = min(batches, self.config.steps - (progress.step - progress.run_start_step))
        requests = {"stopped": STOP_USER, "time_budget": STOP_BUDGET}
        agreed = self._multiworker.fit(dataset, epoch, batches, [progress],
                                       lambda: requests.get(progress.stop_reason, NO_STOP))
        if agreed and not progress.stop_reason:  # another worker asked
            progress.stop_reason = "stopped" if agreed == STOP_USER else "time_budget"

    def _run_label(self) -> str:
        return str(self.rundir.path) if self.chief else ""

    def heldout_loss(self, stop=None) -> float | None:
        return heldout_loss(self.model, self.val_windows, stop=stop)

    _epoch_row_step = -1  # the step of the last epoch listed (EpochEnd)
    _tensorboard = None
    _clock: TrainingClock | None = None

    def _start_tensorboard(self) -> None:
        if self.tensorboard_dir:
            self._tensorboard = TensorBoardLogger(self.tensorboard_dir, self.config.log_every)

    def _notice(self, message: str) -> None:
        self.report(events.Notice(message))

    def _sample_round(self, epoch: int) -> None:
        drawn = sample_round(self.sampler(), self.corpus, self.config, epoch, self.stop_event)
        if drawn is None:  # stopped: the user is waiting for the checkpoint, not for samples
            return
        seed_text, samples = drawn
        self.report(events.SamplesGenerated(epoch, seed_text, samples))
        try:
            self.rundir.write_samples(f"epoch-{epoch:04d}", samples_file(self.corpus, seed_text, samples))
        except RunDirError as error:
            self._notice(str(error))

    def _list_the_last_epoch(self, step: int, train_loss, clock: TrainingClock, progress) -> None:
        """An epoch stopped before it was listed (a stop mid-epoch, or during the held-out
        scoring) is still listed, with its training loss and no held-out loss: in the
        events and in metrics.jsonl, so the app, `watch` and a resumed run show it."""
        if train_loss is None or step <= max(progress.run_start_step, self._epoch_row_step):
            return
        epoch, complete = (step - 1) // self.steps_per_epoch + 1, step % self.steps_per_epoch == 0
        self.report(events.EpochEnd(epoch, step, train_loss, None, clock.elapsed, complete))
        if self.chief:
            self.log_metrics(kind="epoch", epoch=epoch, step=step, clock=clock, train_loss=train_loss)

    def _finish(self, reason, step, train_loss, val_loss, clock, progress) -> events.TrainingFinished:
        self._list_the_last_epoch(step, train_loss, clock, progress)
        scored = val_loss is not None and reason != "stopped"  # (a user who stops is waiting)
        finished = events.TrainingFinished(
            reason=reason, epoch=step // self.steps_per_epoch, step=step,
            train_loss=train_loss, val_loss=val_loss, elapsed=clock.elapsed,
            chars_per_sec=progress.mean_rate(), run_dir=self._run_label(),
            long_context_loss=(long_context_loss_if_long_enough(self.sampler(), self.val_ids)
                               if scored else None))
        if self.chief:
            self.log_metrics(kind="end", epoch=finished.epoch, step=step, clock=clock,
                             train_loss=train_loss, val_loss=val_loss, reason=reason,
                             chars_per_sec=round(finished.chars_per_sec, 1),
                             long_context_loss=finished.long_context_loss)
        self.report(finished)
        return finished

