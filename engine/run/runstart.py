"""How a training run begins: the checkpoint of the run it resumes, or a new model.

A checkpoint of another model (other architecture settings, case setting or vocabulary)
is refused before anything is touched; a resumed optimizer takes the run's current
learning rate and clipnorm; a fresh start moves the previous run aside, whole.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

from engine.config import TrainConfig
from engine.data.corpus import corpus_notes
from engine.data.windows import check_length
from engine.errors import RunDirError
from engine.files import checkpoints
from engine.files.rundir import RunDir
from engine.modeling.model import build_model
from engine.run.epochsamples import SEED_LENGTH
from engine.scale import memory
from engine.scale.multiworker import Collectives, MultiWorkerLoop, fingerprint

# Settings a checkpoint cannot change: resuming with different ones would be a new model.
ARCHITECTURE_FIELDS = ("objective", "units", "layers", "maxlen", "step", "batch_size",
                       "val_fraction", "lowercase")


class RunStart:
    """The beginning of a run of `corpus` in `rundir`; `notice(message)` is told what the
    user should know."""

    def __init__(self, rundir: RunDir, corpus, *, fresh: bool, chief: bool,
                 notice: Callable[[str], None]) -> None:
        self.rundir, self.corpus = rundir, corpus
        self.fresh, self.chief, self.notice = fresh, chief, notice
        self.saved_lr: float | None = None  # the resumed run's learning rate, as its config.json had it

    def corpus_meta(self, config: TrainConfig) -> dict:
        """config.json's notes on the corpus: a few excerpts travel with the run, so sampling
        from it needs no corpus; the absolute path and a fingerprint let the memorization
        check find the very text."""
        rng = np.random.default_rng(config.seed)
        excerpts = [self.corpus.random_text(SEED_LENGTH, rng) for _ in range(16)]
        return {"name": self.corpus.name, "source": self.corpus.source, **self._corpus_notes,
                "chars": len(self.corpus), "vocab_size": len(self.corpus.vocab), "excerpts": excerpts}

    @functools.cached_property
    def _corpus_notes(self) -> dict:
        return corpus_notes(self.corpus)

    def write_run_files(self, run: RunDir, config: TrainConfig) -> None:
        """vocab.json and config.json, in this run directory or a rescue folder."""
        run.write_vocab(self.corpus.vocab)
        run.write_config(config, self.corpus_meta(config))

    @property
    def resuming(self) -> bool:
        return self.rundir.has_checkpoint() and not self.fresh

    def model(self, config: TrainConfig):
        """(model, step): the resumed run's checkpoint, or a new model at step 0."""
        if self.resuming:
            model = self.load_checkpoint(config)
            step = int(model.optimizer.iterations.numpy())
            self.rundir.keep_metrics_up_to(step)
            return model, step
        self.start_new_run(config)
        return self.build_model(config), 0

    def multiworker_model(self, strategy, config: TrainConfig):
        """(the chief's config, model, step, MultiWorkerLoop). The other workers take the
        chief's settings (a resumed run's included) and check that they hold the same
        corpus. Every worker then builds the same model, so the strategy's variable
        creation (which broadcasts initial values) matches up, and the chief's checkpoint,
        read outside the strategy, overwrites their weights and optimizer state."""
        collectives = Collectives(strategy)
        chiefs = TrainConfig.from_json(collectives.broadcast_json(config.to_json()))
        if not self.chief and chiefs != config:
            check_length(self.corpus, chiefs)
            config = chiefs
        collectives.agree(fingerprint(self.corpus.ids, self.corpus.vocab))
        checkpoint = self.load_checkpoint(config) if self.resuming else None
        if checkpoint is None:
            self.start_new_run(config)
        with strategy.scope():
            model = self.build_model(config)
        loop = MultiWorkerLoop(collectives, model, config.batch_size, config.targets_per_window)
        state = checkpoint.variables + checkpoint.optimizer.variables if checkpoint is not None else None
        loop.broadcast_from_chief([v.numpy() for v in state] if state else loop.local_state())
        step = int(model.optimizer.iterations.numpy())
        if checkpoint is not None:
            self.rundir.keep_metrics_up_to(step)
        return config, model, step, loop

    def check_compatible(self, config: TrainConfig, saved: TrainConfig | None = None) -> None:
        """Refuse, before touching anything, to resume a checkpoint of another model.
        `saved`: the run's config.json when the caller has read it already."""
        if not self.resuming:
            return
        saved = saved if saved is not None else self.rundir.load_config()
        vocab, path, corpus = self.rundir.load_vocab(), self.rundir.path, self.corpus
        self.saved_lr = saved.lr
        for name in ARCHITECTURE_FIELDS:  # first: another model (a preset's) is the real cause
            if name != "lowercase" and getattr(saved, name) != getattr(config, name):
                raise RunDirError(
                    f"{path} was trained with {name}={getattr(saved, name)!r}, not "
                    f"{getattr(config, name)!r}; pass --fresh to start over or choose another --run")
        if saved.lowercase != corpus.lowercase:
            # The case setting explains it: name it rather than advise starting over.
            how, option = ("on lower-cased text", "--keep-case") if saved.lowercase else \
                ("with case kept", "--lowercase")
            raise RunDirError(f"{path} was trained {how}; resume it without {option} "
                              "(it keeps its own setting) or choose another --run")
        if vocab != corpus.vocab:
            raise RunDirError(
                f"{path} was trained on a different vocabulary ({len(vocab)} characters; "
                f"{corpus.name} has {len(corpus.vocab)}); pass --fresh to start over there "
                "or choose another --run")

    def new_peak(self, config: TrainConfig) -> bool:
        """Whether this session resumed the run with another --lr: a new plan, followed as it is."""
        return self.saved_lr is not None and not math.isclose(self.saved_lr, config.lr)

    def load_checkpoint(self, config: TrainConfig):
        """The resumed run's model, its optimizer set to the run's current settings."""
        model = checkpoints.load_model(self.rundir, compile=True, on_notice=self.notice)
        if model.optimizer is None or not model.optimizer.built:
            raise RunDirError(f"{self.rundir.model_path} has no optimizer state to resume from; "
                              "pass --fresh to start over")
        if model.output_shape[-1] != len(self.corpus.vocab):
            raise RunDirError(f"the checkpoint in {self.rundir.path} predicts {model.output_shape[-1]} "
                              f"characters but vocab.json lists {len(self.corpus.vocab)}; pass --fresh "
                              "to start over or choose another --run")
        changes = optimizer_changes(model, config, self.saved_lr)
        if changes:
            self.notice(f"resuming with {' and '.join(changes)}, as the run's settings now say "
                        "(the optimizer's state is kept)")
        return model

    def start_new_run(self, config: TrainConfig) -> None:
        if self.fresh and self.chief:  # --fresh, or retrain: the previous run is kept whole
            aside = self.rundir.move_aside()
            if aside is not None:
                self.notice(f"the previous run in {self.rundir.path} was moved, whole, to {aside}")
        self.rundir.clear_history()
        self.write_run_files(self.rundir, config)

    def build_model(self, config: TrainConfig):
        memory.check_gpu_memory(len(self.corpus.vocab), config)
        model = build_model(len(self.corpus.vocab), config)
        # Create the optimizer's slots now, not inside the first traced step: variables made
        # there leave initialisation functions in TensorFlow's context for good (~5 MB a model).
        model.optimizer.build(model.trainable_variables)
        return model


def optimizer_changes(model, config: TrainConfig, saved_lr: float | None) -> list[str]:
    """The restored optimizer keeps the learning rate and clipnorm it was saved with,
    while a resumed run may have changed them (--lr, after a NaN for example): set the
    run's values on it (its moments and step count are kept) and say what changed."""
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # under loss scaling
    changes = []
    restored_lr = float(np.asarray(optimizer.learning_rate))
    if config.schedule != "constant":  # the schedule sets the rate at every step, from --lr
        if saved_lr is not None and not math.isclose(saved_lr, config.lr):
            changes.append(f"learning rate {saved_lr:g} -> {config.lr:g} (the schedule's peak)")
    elif not math.isclose(restored_lr, config.lr, rel_tol=1e-6):  # stored as float32
        optimizer.learning_rate = config.lr
        changes.append(f"learning rate {restored_lr:.6g} -> {config.lr:g}")
    saved_clipnorm = optimizer.clipnorm or None
    if (saved_clipnorm is None) != (config.clipnorm is None) or (
            saved_clipnorm is not None and not math.isclose(saved_clipnorm, config.clipnorm)):
        optimizer.clipnorm = config.clipnorm  # read when the training step is traced
        changes.append(f"clipnorm {saved_clipnorm} -> {config.clipnorm}")
    return changes
