"""A run trained elsewhere (earlier, or now by another process): the same events again.

`open_run(DIR)` opens a saved run for sampling: config, vocabulary, the newest
checkpoint's sampler, the corpus excerpts saved for seed texts. `RunFollower` turns the
run's metrics.jsonl rows back into the engine events a live run reports (a "start" row
is TrainingStarted, an "interval" row BatchProgress, an "epoch" row EpochEnd, an "end"
row TrainingFinished), and a new checkpoint into CheckpointSaved with a fresh sampler;
with `follow=True` it keeps polling (cheap stat() calls about once a second) until
stopped, as toolong's watcher does. A front end therefore shows a live, a saved and a
followed run with one code path.

Nothing here writes to the run directory: any number of followers can watch a run,
and they never disturb its trainer.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine import events
from engine.config import TrainConfig, is_finite_number
from engine.data.windows import Windows, split_point
from engine.errors import CharlmError, RunDirError
from engine.files import checkpoints
from engine.files.metrics import MetricsTail
from engine.files.rundir import RunDir
from engine.files.vetting import checkpoint_step

log = logging.getLogger("charlm.engine")

POLL_INTERVAL = 1.0        # seconds between stat() checks of the run directory
RELOAD_MIN_INTERVAL = 2.0  # at most one checkpoint load per this many seconds


class CheckpointUsed:
    """The checkpoint a saved run's sampler was loaded from; `step`, read when asked (it
    reads the weights file again), is the step it was saved at, None if it does not say."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @functools.cached_property
    def step(self) -> int | None:
        return checkpoint_step(self.path)


@dataclass
class SavedRun:
    """A run directory opened for sampling."""

    path: Path
    config: TrainConfig
    vocab: tuple[str, ...]
    corpus_meta: dict
    sampler: object = None          # engine.modeling.sampler.Sampler of the newest loadable checkpoint
    parameters: int = 0
    excerpts: list[str] = field(default_factory=list)  # seed texts saved with the run
    checkpoint: CheckpointUsed | None = None  # where the sampler's weights came from
    choice: str = "latest"          # the checkpoint asked for, or chosen by default: latest, best or a file

    @property
    def corpus_name(self) -> str:
        name = self.corpus_meta.get("name")
        return name if isinstance(name, str) and name else self.path.name

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch, as the trainer counted them (from the saved corpus size)."""
        chars = self.corpus_meta.get("chars")
        if not isinstance(chars, int) or chars <= 0:
            return 0
        config = self.config
        split = split_point(chars, config.val_fraction)
        return Windows(np.zeros(split, dtype=np.uint8), config.maxlen, config.step, config.objective,
                       config.batch_size).batches_per_epoch


def read_run(run_dir) -> SavedRun:
    """Config, vocabulary and corpus notes of a run (no model yet): refuses a directory
    that is not a run in one sentence."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise RunDirError(f"no such run directory: {run.path}")
    if not os.path.lexists(run.config_path):  # (anything else there is refused by load_config)
        raise RunDirError(f"{run.path} is not a charlm-tui run directory (no config.json)")
    config, vocab, meta = run.load_config(), run.load_vocab(), run.corpus_meta()
    excerpts = meta.get("excerpts") if isinstance(meta.get("excerpts"), list) else []
    return SavedRun(run.path, config, vocab, meta,
                    excerpts=[e for e in excerpts if isinstance(e, str) and e])


def load_sampler(saved: SavedRun, on_notice: Callable[[str], None] | None = None,
                 rebuild_sidecar: bool = False, checkpoint: str | None = None) -> None:
    """Load a checkpoint of `saved` into `saved.sampler`: the newest loadable one, or
    `checkpoint` "best" (model.best.keras) or a .keras file of the run (None: the run's
    default, files.checkpoints.default_checkpoint; `saved.choice` says which); from its numpy
    sidecar when that matches it (no TensorFlow), else through Keras in safe mode. Only
    `rebuild_sidecar` lets a missing sidecar be written (never by a watcher)."""
    run = RunDir(saved.path)
    checkpoint = saved.choice = checkpoint or checkpoints.default_checkpoint(run)
    if checkpoint == "latest":
        saved.sampler, saved.parameters = checkpoints.load_sampler(run, on_notice=on_notice,
                                                                   rebuild_sidecar=rebuild_sidecar)
    else:
        chosen = checkpoints.checkpoint_path(run, checkpoint)
        saved.sampler, saved.parameters = checkpoints.load_sampler_from(run, chosen)
    source = saved.sampler.source
    saved.checkpoint = CheckpointUsed(source) if source is not None else None


def open_run(run_dir, on_notice: Callable[[str], None] | None = None, rebuild_sidecar: bool = False,
             checkpoint: str | None = None) -> SavedRun:
    """A saved run, ready to sample from (`sample`, the app's --no-train, watch), with the
    checkpoint asked for: "latest" (the newest loadable), "best" (model.best.keras), a
    file, or None: the run's best once it has stopped (files.checkpoints.default_checkpoint)."""
    saved = read_run(run_dir)
    load_sampler(saved, on_notice, rebuild_sidecar, checkpoint)
    return saved


# -- metrics rows as events -------------------------------------------------------------------
def _number(value) -> float | None:
    return float(value) if is_finite_number(value) else None


def _count(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class RowsToEvents:
    """Turns metrics.jsonl rows into the events the trainer reported when it wrote them."""

    def __init__(self, saved: SavedRun):
        self.saved = saved
        self.steps_per_epoch = saved.steps_per_epoch
        self.started = False

    def started_event(self, step: int = 0, elapsed: float = 0.0,
                      row: dict | None = None) -> events.TrainingStarted:
        row = row or {}
        saved, config = self.saved, self.saved.config
        per_epoch = _count(row.get("steps_per_epoch")) or self.steps_per_epoch
        self.steps_per_epoch = per_epoch
        meta = saved.corpus_meta
        return events.TrainingStarted(
            corpus_name=saved.corpus_name, corpus_chars=_count(meta.get("chars")) or 0,
            vocab_size=len(saved.vocab), windows_total=0, windows_train=0, parameters=saved.parameters,
            model_summary="", device="", run_dir=str(saved.path), resumed_from_step=step,
            epoch=step // per_epoch + 1 if per_epoch else 1, steps_per_epoch=per_epoch,
            epochs=_count(row.get("epochs")) or config.epochs, step_budget=_count(row.get("step_budget")),
            time_budget=_number(row.get("time_budget")), elapsed=elapsed)

    def __call__(self, rows: list[dict]) -> list:
        out = []
        for row in rows:
            step, kind = _count(row.get("step")), row.get("kind")
            if step is None:
                continue
            wall = _number(row.get("wall")) or 0.0
            epoch = _count(row.get("epoch")) or 1
            train, val = _number(row.get("train_loss")), _number(row.get("val_loss"))
            if kind == "start":
                self.started = True
                out.append(self.started_event(step, wall, row))
                continue
            if not self.started:  # a run from before "start" rows: its settings stand in
                self.started = True
                out.append(self.started_event(0, 0.0))
            per_epoch = self.steps_per_epoch
            if kind == "interval" and train is not None:
                out.append(events.BatchProgress(
                    epoch=epoch, batch=step - (epoch - 1) * per_epoch if per_epoch else 0,
                    batches_per_epoch=per_epoch, step=step, loss=train, chars_per_sec=0.0,
                    chars_seen=_count(row.get("chars")) or 0, elapsed=wall))
            elif kind == "epoch":
                out.append(events.EpochEnd(epoch, step, train if train is not None else math.nan, val, wall,
                                           complete=not per_epoch or step == epoch * per_epoch))
            elif kind == "end":
                reason = row.get("reason") if isinstance(row.get("reason"), str) else "stopped"
                out.append(events.TrainingFinished(
                    reason=reason, epoch=epoch, step=step, train_loss=train, val_loss=val, elapsed=wall,
                    chars_per_sec=_number(row.get("chars_per_sec")) or 0.0, run_dir=str(self.saved.path)))
        return out


def history(run_dir, max_points: int = 1200, max_epochs: int = 200) -> list:
    """The events a run's metrics.jsonl holds, thinned to at most `max_points` progress
    events (evenly spread) and the last `max_epochs` epoch ends: what a front end needs
    to draw a resumed run's past, in memory independent of the file's length."""
    to_events = RowsToEvents(read_run(run_dir))
    tail = MetricsTail(RunDir(run_dir).metrics_path)
    points: list = []
    epochs: list = []
    stride, seen = 1, 0
    while True:
        rows, _ = tail.poll()
        for event in to_events(rows):
            if isinstance(event, events.BatchProgress):
                seen += 1
                if (seen - 1) % stride == 0:
                    points.append(event)
                    if len(points) >= max_points:
                        points, stride = points[::2], stride * 2
            elif isinstance(event, events.EpochEnd):  # (a stopped epoch's row gives way to its end's)
                epochs = ([e for e in epochs if e.epoch != event.epoch] + [event])[-max_epochs:]
        if not tail.pending:
            break
    return sorted(points + epochs, key=lambda event: (event.step, isinstance(event, events.EpochEnd)))


class RunFollower:
    """The events of a run trained by another process (or earlier), on a thread of its own.

    `on_events(list)` is called on that thread with each batch of events; the sampler
    of the newest checkpoint is loaded there too (`sampler()` returns it)."""

    def __init__(self, run_dir, on_events: Callable[[list], None], *, follow: bool = True,
                 poll_interval: float = POLL_INTERVAL, checkpoint: str | None = None):
        self.run_dir = Path(run_dir)
        # A saved run may be sampled from its best checkpoint; a followed one shows its newest.
        self.checkpoint = checkpoint or ("latest" if follow else None)
        self.on_events = on_events
        self.follow = follow
        self.poll_interval = poll_interval
        self.saved: SavedRun | None = None
        self.checkpoints_loaded = 0
        self.error: str | None = None
        self._sampler = None
        self._stop = threading.Event()
        self.done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run, name="charlm-follow", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    def sampler(self):
        return self._sampler

    def run(self) -> None:
        try:
            self._run()
        except CharlmError as error:
            self.error = str(error)
            self.on_events([events.TrainingFailed(self.error)])
        except Exception as error:  # a bug: say so in one line, keep the front end alive
            log.exception("following the run failed")
            self.error = f"{type(error).__name__}: {error}"
            self.on_events([events.TrainingFailed(self.error)])
        finally:
            self.done.set()

    def _run(self) -> None:
        self.on_events([events.Preparing("opening the run…")])
        saved = self._read_run()
        if saved is None:
            return
        self.saved = saved
        meta = saved.corpus_meta
        self.on_events([events.CorpusReady(saved.corpus_name, str(meta.get("source") or ""),
                                           _count(meta.get("chars")) or 0, len(saved.vocab),
                                           str(saved.path))])
        to_events = RowsToEvents(saved)
        tail = MetricsTail(RunDir(saved.path).metrics_path)
        model_path = RunDir(saved.path).model_path
        loaded_signature = attempted_signature = None
        last_load = -math.inf
        while True:
            rows, reset = tail.poll()
            if reset:
                to_events = RowsToEvents(saved)
                to_events.steps_per_epoch = saved.steps_per_epoch
            batch = to_events(rows)
            if batch or reset:
                self.on_events(([events.Preparing("the run started over")] if reset else []) + batch)
            if tail.pending:  # more of a long file is waiting: read it before anything else
                continue
            signature = _signature(model_path)
            if (signature is not None and signature not in (loaded_signature, attempted_signature)
                    and time.monotonic() - last_load >= RELOAD_MIN_INTERVAL):
                attempted_signature, last_load = signature, time.monotonic()
                if self._load_checkpoint(saved):
                    loaded_signature = signature
            if not to_events.started and not self.follow:
                self.on_events([to_events.started_event()])
                to_events.started = True
            if not self.follow or self._stop.wait(self.poll_interval):
                return

    def _read_run(self) -> SavedRun | None:
        while True:  # a trainer may not have written its config and vocabulary yet
            try:
                return read_run(self.run_dir)
            except CharlmError:
                if not self.follow or not self.run_dir.is_dir():
                    raise
                if self._stop.wait(self.poll_interval):
                    return None

    def _load_checkpoint(self, saved: SavedRun) -> bool:
        notices: list[str] = []
        try:
            load_sampler(saved, notices.append, checkpoint=self.checkpoint)
        except CharlmError as error:  # keep the previous sampler; retry at the next change
            if self._sampler is None and not self.follow:
                raise
            log.warning("loading the checkpoint failed: %s", error)
            return False
        if notices:
            self.on_events([events.Notice(notice) for notice in notices])
        self._sampler = saved.sampler
        self.checkpoints_loaded += 1
        step = RunDir(saved.path).load_state().get("step")
        step = int(step) if isinstance(step, (int, float)) else 0
        epoch = step // saved.steps_per_epoch + 1 if saved.steps_per_epoch else 0
        self.on_events([events.CheckpointSaved(str(RunDir(saved.path).model_path), step, epoch)])
        return True


def _signature(path: Path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)
