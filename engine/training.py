"""The training loop: Keras `fit`, one epoch at a time, reporting plain events.

`Trainer.run()` blocks (call it on a worker thread from a UI). `stop()`, `pause()` and
`resume()` may be called from any thread; a stop is honoured after the current batch,
with a checkpoint saved first. The optimizer's step counter, saved in model.keras, is
the single source of truth for where a resumed run continues: epoch and batch follow
from it, because an epoch's shuffle is a pure function of (seed, epoch).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from engine import events, schedule
from engine.config import TrainConfig
from engine.errors import CorpusError, RunDirError, TrainingError
from engine.multiworker import WorkerLost
from engine.rundir import RunDir, save_rescue_run
from engine.windows import Windows, count_windows, split_point

if TYPE_CHECKING:  # engine.corpus is imported by whoever builds the Corpus
    from engine.corpus import Corpus

# Settings a checkpoint cannot change: resuming with different ones would be a new model.
ARCHITECTURE_FIELDS = ("objective", "units", "layers", "maxlen", "step", "batch_size",
                       "val_fraction", "lowercase")
# Seed texts are the book's 60 chars whatever the window: the stateful sampler reads any length.
SEED_LENGTH = 60
PROGRESS_INTERVAL = 0.1  # seconds between BatchProgress events (UIs coalesce anyway)
SCHEDULE_EVERY = 4       # steps between learning-rate updates (a variable assignment each)


def check_length(corpus: "Corpus", config: TrainConfig) -> None:
    """Refuse a corpus too short for one training and one held-out window."""
    split = split_point(len(corpus), config.val_fraction)
    needed = config.maxlen + 1
    if split < needed or len(corpus) - split < needed:
        raise CorpusError(
            f"{corpus.name} has {len(corpus):,} characters: too short for {config.maxlen}-char "
            f"windows with {config.val_fraction:.0%} held out (needs at least "
            f"{math.ceil(needed / config.val_fraction):,}); use a longer text or a smaller --maxlen")


class Trainer:
    def __init__(self, corpus: "Corpus", config: TrainConfig, run_dir,
                 on_event: Callable[[events.Event], None] | None = None, *,
                 fresh: bool = False, sample_each_epoch: bool = True, tensorboard_dir=None):
        config.validate()
        check_length(corpus, config)
        if config.lowercase != corpus.lowercase:  # the corpus says what is trained; config.json must too
            config = dataclasses.replace(config, lowercase=corpus.lowercase)
        self.corpus = corpus
        self.config = config
        self.chief, self.worker = True, ""  # False/"worker 1 of 2" for a multi-worker helper
        self._scratch: str | None = None
        if config.strategy == "multiworker":
            from engine.distribute import is_chief, worker_label

            self.chief, self.worker = is_chief(), worker_label()
            if not self.chief:  # only the chief keeps the run; the others' bookkeeping is scratch
                run_dir = self._scratch = tempfile.mkdtemp(prefix="charlm-worker-")
                tensorboard_dir = None
        self.rundir = RunDir(run_dir)
        self.on_event = on_event or (lambda event: None)
        self.fresh = fresh
        self.sample_each_epoch = sample_each_epoch
        self.tensorboard_dir = tensorboard_dir
        self.model = None
        self._multiworker = None  # engine.multiworker.MultiWorkerLoop under that strategy
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()  # set = not paused
        self._model_lock = threading.Lock()
        self._cut_windows()
        self._check_memory()
        self.rundir.check_can_train(self._corpus_path())  # before anything is written there
        self.rundir.acquire()
        try:
            self._check_compatible()
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

    # -- control from other threads ----------------------------------------------------
    def stop(self) -> None:
        self._stop.set()
        self._running.set()  # a paused trainer must wake up to stop

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def sampler(self):
        """A sampler holding a copy of the current weights (safe while training runs)."""
        from engine.sampler import Sampler

        with self._model_lock:
            if self.model is None:
                raise TrainingError("the model is not built yet")
            return Sampler.from_keras_model(self.model, self.corpus.vocab, lowercase=self.corpus.lowercase)

    # -- the run --------------------------------------------------------------------------
    def _check_compatible(self) -> None:
        """Refuse, before touching anything, to resume a checkpoint of another model."""
        if self.fresh or not self.rundir.has_checkpoint():
            return
        saved = self.rundir.load_config()
        vocab = self.rundir.load_vocab()
        self._saved_lr = saved.lr
        for name in ARCHITECTURE_FIELDS:  # first: another model (a preset's) is the real cause
            if name != "lowercase" and getattr(saved, name) != getattr(self.config, name):
                raise RunDirError(
                    f"{self.rundir.path} was trained with {name}={getattr(saved, name)!r}, not "
                    f"{getattr(self.config, name)!r}; pass --fresh to start over or choose another --run")
        if saved.lowercase != self.corpus.lowercase:
            # The case setting explains it: name it rather than advise starting over.
            how, option = ("on lower-cased text", "--keep-case") if saved.lowercase else \
                ("with case kept", "--lowercase")
            raise RunDirError(f"{self.rundir.path} was trained {how}; resume it without {option} "
                              "(it keeps its own setting) or choose another --run")
        if vocab != self.corpus.vocab:
            raise RunDirError(
                f"{self.rundir.path} was trained on a different vocabulary ({len(vocab)} characters; "
                f"{self.corpus.name} has {len(self.corpus.vocab)}); pass --fresh to start over there "
                "or choose another --run")

    _saved_lr: float | None = None  # the resumed run's learning rate, as its config.json had it

    def new_peak(self) -> bool:
        """Whether this session resumed the run with another --lr: a new plan, followed as it is."""
        return self._saved_lr is not None and not math.isclose(self._saved_lr, self.config.lr)

    def _corpus_path(self) -> str | None:
        """The file or folder the corpus was read from (None for a built-in one)."""
        source = self.corpus.source
        return source if os.path.exists(source) else None

    def _reclaim_run_dir(self) -> None:
        """Write only into a run directory whose lock this process holds. If it was deleted
        or moved away while training (rm -rf RUN), make it again, lock it and write
        vocab.json and config.json, so the checkpoint that follows lands in a run that
        resumes; raises RunDirError when that cannot be done (the path is a file now,
        another process took it...)."""
        if not self.chief or self.rundir.holds_lock():
            return
        if self._abandoned:
            raise RunDirError(f"{self.rundir.path} was released: the process is leaving")
        existed = self.rundir.path.is_dir()
        self.rundir.release()
        self.rundir.check_can_train(self._corpus_path())
        self.rundir.acquire()
        self.rundir.write_vocab(self.corpus.vocab)
        self.rundir.write_config(self.config, self._corpus_meta())
        if existed:
            self._notice(f"{self.rundir.lock_path} was removed or replaced during training; took the lock again")
        else:
            self._notice(f"{self.rundir.path} was deleted or moved during training; made it again, and the "
                         "checkpoints go on there (metrics and samples written before are not in it)")

    def _apply_optimizer_settings(self, model) -> None:
        """The restored optimizer keeps the learning rate and clipnorm it was saved with,
        while a resumed run may have changed them (--lr, after a NaN for example): set the
        run's values on it (its moments and step count are kept) and say so."""
        optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # under loss scaling
        changes = []
        saved_lr = float(np.asarray(optimizer.learning_rate))
        if self.config.schedule != "constant":  # the schedule sets the rate at every step, from --lr
            if self._saved_lr is not None and not math.isclose(self._saved_lr, self.config.lr):
                changes.append(f"learning rate {self._saved_lr:g} -> {self.config.lr:g} (the schedule's peak)")
        elif not math.isclose(saved_lr, self.config.lr, rel_tol=1e-6):  # stored as float32
            optimizer.learning_rate = self.config.lr
            changes.append(f"learning rate {saved_lr:.6g} -> {self.config.lr:g}")
        saved_clipnorm = optimizer.clipnorm or None
        if (saved_clipnorm is None) != (self.config.clipnorm is None) or (
                saved_clipnorm is not None and not math.isclose(saved_clipnorm, self.config.clipnorm)):
            optimizer.clipnorm = self.config.clipnorm  # read when the training step is traced
            changes.append(f"clipnorm {saved_clipnorm} -> {self.config.clipnorm}")
        if changes:
            self._notice(f"resuming with {' and '.join(changes)}, as the run's settings now say "
                         "(the optimizer's state is kept)")

    def _corpus_meta(self) -> dict:
        # A few excerpts travel with the run, so sampling from it needs no corpus; the
        # absolute path and a fingerprint let the memorization check find the very text.
        rng = np.random.default_rng(self.config.seed)
        excerpts = [self.corpus.random_text(SEED_LENGTH, rng) for _ in range(16)]
        return {"name": self.corpus.name, "source": self.corpus.source, **self._corpus_notes,
                "chars": len(self.corpus), "vocab_size": len(self.corpus.vocab), "excerpts": excerpts}

    @functools.cached_property
    def _corpus_notes(self) -> dict:
        from engine.corpus import corpus_notes

        return corpus_notes(self.corpus)

    def _prepare_model(self):
        from engine.distribute import make_strategy, set_precision
        from engine.tfsetup import keras

        if self.config.strategy == "multiworker":
            self._notice(f"{self.worker}: waiting for every worker named in TF_CONFIG (Ctrl-C gives up)")
        strategy = make_strategy(self.config.strategy)  # first: multi-worker set-up must precede other ops
        keras().utils.set_random_seed(self.config.seed)
        self.rundir.cleanup_temporaries()
        note = set_precision(self.config.mixed_precision)
        if note:
            self._notice(note)
        if self.config.strategy == "multiworker":
            return self._prepare_multiworker(strategy)
        # Variables made inside the scope are mirrored across the strategy's devices.
        with strategy.scope():
            if self._resuming():
                model = self._load_checkpoint()
                step = int(model.optimizer.iterations.numpy())
                self.rundir.keep_metrics_up_to(step)
                return model, step
            self._start_new_run()
            return self._build_model(), 0

    def _prepare_multiworker(self, strategy):
        """The other workers take the chief's settings (a resumed run's included) and check
        that they hold the same corpus. Every worker then builds the same model, so the
        strategy's variable creation (which broadcasts initial values) matches up, and the
        chief's checkpoint, read outside the strategy, overwrites their weights and
        optimizer state."""
        from engine.multiworker import Collectives, MultiWorkerLoop, fingerprint

        collectives = Collectives(strategy)
        chiefs = TrainConfig.from_json(collectives.broadcast_json(self.config.to_json()))
        if not self.chief and chiefs != self.config:
            self.config = chiefs
            check_length(self.corpus, chiefs)
            self._cut_windows()
        collectives.agree(fingerprint(self.corpus.ids, self.corpus.vocab))
        checkpoint = self._load_checkpoint() if self._resuming() else None
        if checkpoint is None:
            self._start_new_run()
        with strategy.scope():
            model = self._build_model()
        loop = MultiWorkerLoop(collectives, model, self.config.batch_size, self.config.targets_per_window)
        state = checkpoint.variables + checkpoint.optimizer.variables if checkpoint is not None else None
        loop.broadcast_from_chief([v.numpy() for v in state] if state else loop.local_state())
        step = int(model.optimizer.iterations.numpy())
        if checkpoint is not None:
            self.rundir.keep_metrics_up_to(step)
        self._multiworker = loop
        return model, step

    def _resuming(self) -> bool:
        return self.rundir.has_checkpoint() and not self.fresh

    def _load_checkpoint(self):
        model = self.rundir.load_model(compile=True, on_notice=self._notice)
        if model.optimizer is None or not model.optimizer.built:
            raise RunDirError(f"{self.rundir.model_path} has no optimizer state to resume from; "
                              "pass --fresh to start over")
        if model.output_shape[-1] != len(self.corpus.vocab):
            raise RunDirError(f"the checkpoint in {self.rundir.path} predicts {model.output_shape[-1]} "
                              f"characters but vocab.json lists {len(self.corpus.vocab)}; pass --fresh "
                              "to start over or choose another --run")
        self._apply_optimizer_settings(model)
        return model

    def _start_new_run(self) -> None:
        if self.fresh and self.chief:  # --fresh, or retrain: the previous run is kept whole
            aside = self.rundir.move_aside()
            if aside is not None:
                self._notice(f"the previous run in {self.rundir.path} was moved, whole, to {aside}")
        self.rundir.clear_history()
        self.rundir.write_vocab(self.corpus.vocab)
        self.rundir.write_config(self.config, self._corpus_meta())

    def _check_memory(self) -> None:
        """Refuse a model that cannot fit this machine's memory (engine/memory.py), before
        anything is built or written; on a GPU its memory is checked in _build_model."""
        from engine import memory

        on_gpu = _gpus_listed() if "tensorflow" in sys.modules else memory.gpu_likely()
        needed = memory.estimate(len(self.corpus.vocab), self.config)
        problem = memory.machine_problem(needed, self.config, on_gpu=on_gpu)
        if problem:
            raise TrainingError(problem)

    def _check_gpu_memory(self) -> None:
        """Refuse a training step that cannot fit the smallest GPU, as TensorFlow reports
        it (engine/compat.py); skipped where it does not say."""
        from engine import memory
        from engine.compat import gpu_memory_bytes
        from engine.tfsetup import tensorflow

        if not _gpus_listed():
            return
        sizes = gpu_memory_bytes()
        if not sizes:
            return
        replicas = tensorflow().distribute.get_strategy().num_replicas_in_sync
        problem = memory.gpu_problem(memory.estimate(len(self.corpus.vocab), self.config), self.config,
                                     sizes, replicas)
        if problem:
            raise TrainingError(problem)

    def _build_model(self):
        from engine.model import build_model

        self._check_gpu_memory()
        model = build_model(len(self.corpus.vocab), self.config)
        # Create the optimizer's slots now, not inside the first traced step: variables made
        # there leave initialisation functions in TensorFlow's context for good (~5 MB a model).
        model.optimizer.build(model.trainable_variables)
        return model

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
        step = None
        if self.chief and self.rundir.acquired:
            try:
                state = self.rundir.load_state() if self.rundir.has_checkpoint() else {}
            except RunDirError:
                state = {}
            step = state.get("step") if isinstance(state.get("step"), int) else None
            wall = self._clock.elapsed if self._clock is not None else state.get("elapsed", 0.0)
            per_epoch = self.train_windows.batches_per_epoch
            at = step or 0
            row = {"kind": "end", "epoch": at // per_epoch, "step": at, "wall": round(wall, 3),
                   "chars": at * self.config.batch_size * self.config.targets_per_window,
                   "train_loss": None, "val_loss": None, "reason": "stopped", "abandoned": True}
            try:
                self.rundir.append_metrics(row)
            except RunDirError:
                pass  # a log: the checkpoint is what matters, and it is whole
        self._abandoned = True  # (before the release: the stuck thread must not take it again)
        self.rundir.release()
        return step

    _abandoned = False

    def close(self) -> None:
        if self._clock is not None:
            self._clock.close()
        self.rundir.release()
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def _run(self) -> events.TrainingFinished:
        from engine.model import summary_text
        from engine.tfsetup import device_name

        model, step = self._prepare_model()
        config = self.config  # a multi-worker helper has taken the chief's by now
        from engine.model import use_xla_for_stacked_lstms

        use_xla_for_stacked_lstms(model, config)  # (not under a strategy: Keras's choice stands)
        with self._model_lock:
            self.model = model
        if step:  # the resumed run may carry new run-length settings
            self.rundir.write_config(config, self._corpus_meta())
        per_epoch = self.train_windows.batches_per_epoch
        clock = self._clock = _Clock(self.rundir.load_state().get("elapsed", 0.0) if step else 0.0)
        self._emit(events.TrainingStarted(
            corpus_name=self.corpus.name, corpus_chars=len(self.corpus), vocab_size=len(self.corpus.vocab),
            windows_total=count_windows(len(self.corpus), config.maxlen, config.step),
            windows_train=self.train_windows.count, parameters=model.count_params(),
            model_summary=summary_text(model), device=device_name(), run_dir=self._run_label(),
            resumed_from_step=step, epoch=step // per_epoch + 1, steps_per_epoch=per_epoch,
            worker=self.worker, epochs=config.epochs, step_budget=config.steps,
            time_budget=config.time_budget, elapsed=clock.elapsed))
        # A watcher in another process turns these rows back into the same events.
        self._log_metrics(kind="start", epoch=step // per_epoch + 1, step=step, clock=clock, train_loss=None,
                          steps_per_epoch=per_epoch, epochs=config.epochs, step_budget=config.steps,
                          time_budget=config.time_budget)

        progress = _progress(self, clock, step)
        self._start_tensorboard()
        reason, train_loss, val_loss = "epochs", None, None
        while step // per_epoch < config.epochs:
            epoch, first_batch = divmod(step, per_epoch)
            progress.start_epoch(epoch + 1, first_batch)
            try:
                self._fit_epoch(model, epoch, first_batch, progress)
            except WorkerLost:  # keep what was learnt until then
                self._checkpoint(model, progress.step, clock, epoch + 1)
                raise
            step = progress.step
            if progress.failure:
                self._roll_back(progress.failure)
            train_loss = progress.epoch_loss()
            reason = progress.stop_reason
            complete = step % per_epoch == 0
            stoppable = not self._multiworker  # (other workers hear of a stop with the next step)
            if stoppable and self._stop.is_set():
                reason = "stopped"  # (also when it came with the epoch's last batch)
            if reason == "stopped":  # the user is waiting: checkpoint, no evaluation
                self._checkpoint(model, step, clock, epoch + 1)
                break
            val_loss = self.heldout_loss(stop=self._stop if stoppable else None) if self.chief else None
            if val_loss is None and stoppable and self._stop.is_set():  # quit while scoring
                reason = "stopped"
                self._checkpoint(model, step, clock, epoch + 1)
                break
            self._emit(events.EpochEnd(epoch + 1, step, train_loss, val_loss, clock.elapsed, complete))
            self._log_metrics(kind="epoch", epoch=epoch + 1, step=step, clock=clock,
                              train_loss=train_loss, val_loss=val_loss)
            self._checkpoint_keeping_best(model, step, clock, epoch + 1, val_loss)
            # Stopped during the evaluation: saved, so stop now (other workers, already in
            # the next epoch, hear of it with its first step).
            if self._stop.is_set() and not self._multiworker:
                reason = "stopped"
                break
            if self.sample_each_epoch and config.sample_length and self.chief:
                self._sample_round(epoch + 1)
                if self._stop.is_set() and not self._multiworker:  # stopped while sampling: saved above
                    reason = "stopped"
            if reason:
                break
        else:
            reason = "epochs"
        clock.pause()
        if self.checkpoint_error is not None and self.chief:
            self._rescue(model, step, clock)
        return self._finish(reason or "epochs", step, train_loss, val_loss, clock, progress)

    # -- pieces of the run ------------------------------------------------------------------
    def _fit_epoch(self, model, epoch: int, first_batch: int, progress) -> None:
        """Train from `first_batch` to the end of `epoch` (0-based), or until a stop."""
        dataset = self.train_windows.dataset(epoch, first_batch)
        batches = self.train_windows.batches_per_epoch - first_batch
        if not self._multiworker:
            # initial_epoch/epochs: one epoch per call, numbered as callbacks expect
            model.fit(dataset, initial_epoch=epoch, epochs=epoch + 1, verbose=0, shuffle=False,
                      steps_per_epoch=batches, callbacks=[progress])
            return
        from engine.multiworker import NO_STOP, STOP_BUDGET, STOP_USER

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
        from engine.model import heldout_loss

        return heldout_loss(self.model, self.val_windows, stop=stop)

    def _emit(self, event) -> None:
        if isinstance(event, events.EpochEnd):
            self._epoch_row_step = event.step
        if self._tensorboard is not None:
            self._tensorboard(event)
        self.on_event(event)

    _epoch_row_step = -1  # the step of the last epoch listed (EpochEnd)

    _tensorboard = None
    _clock: "_Clock | None" = None

    def _start_tensorboard(self) -> None:
        if self.tensorboard_dir:
            from engine.tensorboard import TensorBoardLogger

            self._tensorboard = TensorBoardLogger(self.tensorboard_dir, self.config.log_every)

    def _notice(self, message: str) -> None:
        self._emit(events.Notice(message))

    def _log_metrics(self, *, kind: str, epoch: int, step: int, clock: "_Clock",
                     train_loss: float | None, val_loss: float | None = None, **more) -> None:
        row = {"kind": kind, "epoch": epoch, "step": step, "wall": round(clock.elapsed, 3),
               "chars": step * self.config.batch_size * self.config.targets_per_window,
               "train_loss": train_loss, "val_loss": val_loss, **more}
        try:
            self._reclaim_run_dir()
            self.rundir.append_metrics(row)
        except RunDirError as error:  # metrics are a log: losing a line must not stop training
            self._emit(events.Notice(str(error)))

    def save_checkpoint(self) -> None:
        """Save the current weights now (a retry after a failed checkpoint, for example);
        raises RunDirError if it fails again, with the weights still in memory."""
        with self._model_lock:
            model = self.model
        if model is None:
            raise TrainingError("the model is not built yet")
        step = int(model.optimizer.iterations.numpy())
        self._reclaim_run_dir()
        self.rundir.save_model(model)
        self.checkpoint_error = None
        self._emit(events.CheckpointSaved(str(self.rundir.model_path), step,
                                          step // self.train_windows.batches_per_epoch + 1))

    def _checkpoint(self, model, step: int, clock: "_Clock", epoch: int) -> bool:
        if not self.chief:  # the chief's checkpoint has the same weights
            return True
        try:
            self._reclaim_run_dir()
            self.rundir.save_model(model)
            self.rundir.write_state(self._state(step, epoch, clock))
        except RunDirError as error:
            # The weights are still in memory: say so and carry on; the next checkpoint retries.
            self._emit(events.Notice(f"{error}; training goes on and the next checkpoint will retry"))
            self.checkpoint_error = error
            return False
        self.checkpoint_error = None
        self._emit(events.CheckpointSaved(str(self.rundir.model_path), step, epoch))
        return True

    checkpoint_error: RunDirError | None = None
    _best_val_loss: float | None = None  # the lowest held-out loss kept as model.best.keras

    def _best_so_far(self) -> float:
        if self._best_val_loss is None:  # a resumed run's best so far, if it kept one
            state = self.rundir.load_state() if self.rundir.best_model_path.exists() else {}
            self._best_val_loss = state.get("best_val_loss", math.inf)
        return self._best_val_loss

    def _checkpoint_keeping_best(self, model, step: int, clock: "_Clock", epoch: int, val_loss) -> None:
        """The epoch-end checkpoint; if its held-out loss is the lowest yet, it is kept
        as model.best.keras too (with the loss in state.json, so a resumed run knows)."""
        previous_best = self._best_so_far()
        improved = self.chief and val_loss is not None and math.isfinite(val_loss) and val_loss < previous_best
        if improved:
            self._best_val_loss = val_loss  # written into state.json by the checkpoint
        if not self._checkpoint(model, step, clock, epoch):
            self._best_val_loss = previous_best
            return
        if improved:
            try:
                self.rundir.keep_best()
            except RunDirError as error:  # the latest checkpoint is saved: say so, carry on
                self._best_val_loss = previous_best
                self._emit(events.Notice(str(error)))
        every = self.config.keep_every
        if self.chief and every and epoch % every == 0 and step % self.train_windows.batches_per_epoch == 0:
            try:
                self.rundir.keep_epoch(epoch, self.config.keep_max)
            except RunDirError as error:
                self._emit(events.Notice(str(error)))
    rescue_dir = None  # where the model went when the run directory could not take it

    def _state(self, step: int, epoch: int, clock: "_Clock") -> dict:
        state = {"step": step, "epoch": epoch, "elapsed": clock.elapsed,
                 "chars": step * self.config.batch_size * self.config.targets_per_window}
        if self.chief and math.isfinite(self._best_so_far()):
            state["best_val_loss"] = self._best_val_loss
        return state

    def _rescue(self, model, step: int, clock: "_Clock") -> None:
        """The last checkpoint could not be written to the run directory: save the model as
        a complete run somewhere safe, and say where in checkpoint_error (left as it was if
        that fails too: it says already that the checkpoint was not saved)."""
        epoch = step // self.train_windows.batches_per_epoch + 1

        def save(rescue: RunDir) -> None:
            rescue.write_vocab(self.corpus.vocab)
            rescue.write_config(self.config, self._corpus_meta())
            rescue.save_model(model)
            rescue.write_state(self._state(step, epoch, clock))

        try:
            self.rescue_dir = save_rescue_run(save)
        except RunDirError:
            return
        self.checkpoint_error = RunDirError(
            f"{self.checkpoint_error}; the model was saved in {self.rescue_dir} instead (charlm-tui sample "
            f"--run {self.rescue_dir}, or copy its files back)")
        self._notice(str(self.checkpoint_error))

    def _roll_back(self, failure: str) -> None:
        if self.rundir.has_checkpoint():
            with self._model_lock:
                self.model = self.rundir.load_model(compile=True, on_notice=self._notice)
            step = int(self.model.optimizer.iterations.numpy())
            where = f"rolled back to the last checkpoint (step {step:,})"
        else:
            where = "no checkpoint was saved yet"
        raise TrainingError(f"{failure}; {where}; try a lower learning rate "
                            f"(--lr {self.config.lr / 4:g}) or gradient clipping")

    def _sample_round(self, epoch: int) -> None:
        sampler = self.sampler()
        rng = np.random.default_rng([self.config.seed, epoch])
        seed_text = self.corpus.random_text(SEED_LENGTH, rng)
        samples = self._generate(sampler, seed_text, seed=int(rng.integers(2**31)))
        if samples is None:  # stopped: the user is waiting for the checkpoint, not for samples
            return
        self._emit(events.SamplesGenerated(epoch, seed_text, samples))
        text = f"--- seed: {seed_text}\n" + "".join(
            f"\n--- temperature {t}\n{seed_text}{sample}\n{self._copied_line(sample)}\n"
            for t, sample in samples.items())
        try:
            self.rundir.write_samples(f"epoch-{epoch:04d}", text)
        except RunDirError as error:
            self._emit(events.Notice(str(error)))

    def _generate(self, sampler, seed_text: str, seed: int) -> dict[float, str] | None:
        """The epoch's samples (sampler.generate), or None once a stop is asked: a long
        --length must not hold a stop up."""
        temperatures = self.config.temperatures
        columns: list[list[str]] = [[] for _ in temperatures]
        for number, (chars, _) in enumerate(sampler.stream(seed_text, temperatures, self.config.sample_length,
                                                           seed=seed)):
            if number % 64 == 0 and self._stop.is_set():
                return None
            for column, char in zip(columns, chars):
                column.append(char)
        return {float(t): "".join(column) for t, column in zip(temperatures, columns)}

    def _copied_line(self, sample: str) -> str:
        """How much of a sample is copied from the training text (engine/novelty.py); its
        index is built at the first call, here on the training thread, once per corpus."""
        from engine.novelty import index_for

        try:
            measured = index_for(self.corpus).measure(sample).describe()
        except CorpusError as error:  # a corpus too big to index: say so, in every file
            measured = f"n/a ({error})"
        return f"--- copied from the training text: {measured}"

    def _list_the_last_epoch(self, step: int, train_loss, clock: "_Clock", progress) -> None:
        """An epoch stopped before it was listed (a stop mid-epoch, or during the held-out
        scoring) is still listed, with its training loss and no held-out loss: in the
        events and in metrics.jsonl, so the app, `watch` and a resumed run show it."""
        if train_loss is None or step <= max(progress.run_start_step, self._epoch_row_step):
            return
        per_epoch = self.train_windows.batches_per_epoch
        epoch, complete = (step - 1) // per_epoch + 1, step % per_epoch == 0
        self._emit(events.EpochEnd(epoch, step, train_loss, None, clock.elapsed, complete))
        if self.chief:
            self._log_metrics(kind="epoch", epoch=epoch, step=step, clock=clock, train_loss=train_loss)

    def _long_context_loss(self) -> float | None:
        """The held-out loss with 200+ characters of context, the state carried
        (engine/longcontext.py: numpy, a fraction of a second for Nietzsche's held-out
        text); None where that text is too short for it."""
        from engine.longcontext import long_context_loss

        try:
            return long_context_loss(self.sampler(), self.val_ids)
        except ValueError:
            return None

    def _finish(self, reason, step, train_loss, val_loss, clock, progress) -> events.TrainingFinished:
        self._list_the_last_epoch(step, train_loss, clock, progress)
        scored = val_loss is not None and reason != "stopped"  # (a user who stops is waiting)
        finished = events.TrainingFinished(
            reason=reason, epoch=step // self.train_windows.batches_per_epoch, step=step,
            train_loss=train_loss, val_loss=val_loss, elapsed=clock.elapsed,
            chars_per_sec=progress.mean_rate(), run_dir=self._run_label(),
            long_context_loss=self._long_context_loss() if scored else None)
        if self.chief:
            self._log_metrics(kind="end", epoch=finished.epoch, step=step, clock=clock,
                              train_loss=train_loss, val_loss=val_loss, reason=reason,
                              chars_per_sec=round(finished.chars_per_sec, 1),
                              long_context_loss=finished.long_context_loss)
        self._emit(finished)
        return finished


class _Clock:
    """Seconds of training, accumulated across resumes, counting neither pauses nor time
    the process could not run (stopped by SIGSTOP or Ctrl-Z, a suspended machine).

    CLOCK_MONOTONIC leaves out a suspend on Linux, but goes on while a process is stopped.
    A SIGCONT handler cannot tell us (Python runs handlers on the main thread only, the
    app trains on a worker thread, and Textual has its own), a gap between two batch ends
    cannot either (the first batch traces, an epoch end evaluates, a GPU step may take
    seconds), and process_time() counts every thread's CPU, not seconds of training. So a
    heartbeat thread that only sleeps notes the time every HEARTBEAT seconds (readers of
    `elapsed` note it too, so the first read after a SIGCONT is right): it can be late only
    if the whole process did not run, or if another thread held the GIL inside C code. A
    gap over STOPPED_AFTER in which the process used less CPU than CPU_FRACTION of it is
    the first kind, and its excess is taken off the clock; in the second the holder was
    running, using the CPU, and the gap counts."""

    HEARTBEAT = 0.1
    STOPPED_AFTER = 1.0
    CPU_FRACTION = 0.25

    def __init__(self, already: float = 0.0):
        self._lock = threading.Lock()
        self._already = float(already)
        self._since: float | None = time.monotonic()
        self._last_note = (self._since, time.process_time())
        self._closed = threading.Event()
        threading.Thread(target=self._heartbeat, name="charlm-clock", daemon=True).start()

    def _heartbeat(self) -> None:
        while not self._closed.wait(self.HEARTBEAT):
            self._note_time()

    def _note_time(self) -> None:
        """Take the time since the last note off the clock if the process was stopped."""
        with self._lock:
            now, cpu = time.monotonic(), time.process_time()
            (last_now, last_cpu), self._last_note = self._last_note, (now, cpu)
            gap = now - last_now
            if self._since is None or gap <= self.STOPPED_AFTER or cpu - last_cpu >= self.CPU_FRACTION * gap:
                return
            self._since = min(now, self._since + gap - self.HEARTBEAT)

    @property
    def elapsed(self) -> float:
        self._note_time()
        with self._lock:
            running = time.monotonic() - self._since if self._since is not None else 0.0
            return self._already + running

    def pause(self) -> None:
        self._note_time()
        with self._lock:
            if self._since is not None:
                self._already += time.monotonic() - self._since
                self._since = None

    def resume(self) -> None:
        with self._lock:
            if self._since is None:
                self._since = time.monotonic()

    def close(self) -> None:
        """Stop the heartbeat thread."""
        self._closed.set()


def _gpus_listed() -> bool:
    from engine.tfsetup import tensorflow

    return bool(tensorflow().config.list_physical_devices("GPU"))


def _progress(trainer: Trainer, clock: _Clock, step: int):
    """A `_ProgressMixin` that is also a keras Callback (Keras is imported late, so the
    concrete class is made on first use)."""
    return _progress_class()(trainer, clock, step)


@functools.cache
def _progress_class():
    from engine.tfsetup import keras

    return type("ProgressCallback", (_ProgressMixin, keras().callbacks.Callback), {})


class _ProgressMixin:
    """Per batch: events, metrics rows, stop/pause/budget checks, mid-epoch checkpoints."""

    def __init__(self, trainer: Trainer, clock: _Clock, step: int):
        super().__init__()
        self.trainer = trainer
        self.clock = clock
        self.step = step
        self.run_start_step = step
        self.run_start_time = clock.elapsed
        self.stop_reason: str | None = None
        self.failure: str | None = None
        self.targets_per_batch = trainer.config.batch_size * trainer.config.targets_per_window
        self.last_checkpoint = time.monotonic()

    def _schedule_learning_rate(self) -> None:
        """Set the learning rate for the next step (engine/schedule.py)."""
        config = self.trainer.config
        if config.schedule == "constant":
            return
        fraction = schedule.fraction_done(
            config, step=self.step, steps_per_epoch=self.trainer.train_windows.batches_per_epoch,
            session_steps=self.step - self.run_start_step,
            session_seconds=self.clock.elapsed - self.run_start_time)
        optimizer = self.model.optimizer
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        if self.resumed is None and self.run_start_step and not self.trainer.new_peak():
            # the checkpoint's rate, read once: a resumed session never raises it (engine/schedule.py)
            self.resumed = schedule.Resumed(self.step, fraction, float(np.asarray(optimizer.learning_rate)),
                                            lag=SCHEDULE_EVERY)
        optimizer.learning_rate = schedule.learning_rate(config, self.step, fraction, self.resumed)

    resumed: "schedule.Resumed | None" = None

    def start_epoch(self, epoch: int, first_batch: int) -> None:
        self.epoch = epoch
        self.first_batch = first_batch
        self.batches = 0
        self.loss_sum = 0.0                 # running mean * batches, as Keras reports it
        self.interval_sum = 0.0
        self.interval_batches = 0
        self.last_event = 0.0
        self.rate_mark = (self.clock.elapsed, self.step)  # training seconds: stops and pauses left out
        self.rate = 0.0

    def epoch_loss(self) -> float | None:
        return self.loss_sum / self.batches if self.batches else None

    def mean_rate(self) -> float:
        seconds = self.clock.elapsed - self.run_start_time
        return (self.step - self.run_start_step) * self.targets_per_batch / seconds if seconds > 0 else 0.0

    def on_train_begin(self, logs=None):  # each epoch's fit: the rate for its first step
        self._schedule_learning_rate()

    def on_train_batch_end(self, batch, logs=None):
        trainer, config = self.trainer, self.trainer.config
        self.step += 1
        self.batches += 1
        running_mean = float((logs or {}).get("loss", float("nan")))
        batch_loss = running_mean * self.batches - self.loss_sum
        self.loss_sum = running_mean * self.batches
        if not math.isfinite(running_mean):
            self.failure = f"the loss became {running_mean} at step {self.step:,}"
            self.model.stop_training = True
            return
        self.interval_sum += batch_loss
        self.interval_batches += 1
        if self.step % SCHEDULE_EVERY == 0:
            self._schedule_learning_rate()
        now = time.monotonic()
        trained = self.clock.elapsed  # the rate is per training second: stops and pauses left out
        if trained - self.rate_mark[0] >= 1.0:
            self.rate = (self.step - self.rate_mark[1]) * self.targets_per_batch / (trained - self.rate_mark[0])
            self.rate_mark = (trained, self.step)
        elif not self.rate:
            seconds = trained - self.rate_mark[0]
            self.rate = (self.step - self.rate_mark[1]) * self.targets_per_batch / seconds if seconds else 0.0

        if self.step % config.log_every == 0:
            trainer._log_metrics(kind="interval", epoch=self.epoch, step=self.step, clock=self.clock,
                                 train_loss=self.interval_sum / self.interval_batches)
            self.interval_sum, self.interval_batches = 0.0, 0
        per_epoch = trainer.train_windows.batches_per_epoch
        if now - self.last_event >= PROGRESS_INTERVAL or self.step % per_epoch == 0:
            self.last_event = now
            trainer._emit(events.BatchProgress(
                epoch=self.epoch, batch=self.first_batch + self.batches, batches_per_epoch=per_epoch,
                step=self.step, loss=running_mean, chars_per_sec=self.rate,
                chars_seen=self.step * self.targets_per_batch, elapsed=self.clock.elapsed))

        if not trainer._running.is_set():   # paused: hold here, between batches
            self.clock.pause()
            trainer._running.wait()
            self.clock.resume()
        if trainer._stop.is_set():
            self.stop_reason = "stopped"
        elif config.steps is not None and self.step - self.run_start_step >= config.steps:
            self.stop_reason = "steps"
        elif config.time_budget is not None and self.clock.elapsed - self.run_start_time >= config.time_budget:
            self.stop_reason = "time_budget"
        if self.stop_reason:
            self.model.stop_training = True
        elif time.monotonic() - self.last_checkpoint >= config.checkpoint_every and self.step % per_epoch:
            self.last_checkpoint = time.monotonic()
            trainer._checkpoint(self.model, self.step, self.clock, self.epoch)
