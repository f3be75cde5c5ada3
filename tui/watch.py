"""`charlm-tui watch DIR`: the app attached to a run another process is training.

It is the sampling-only mode plus two followers, run on one worker thread that polls
the run directory about once a second with cheap stat() calls:

* metrics.jsonl: only the new complete lines are read and parsed; they feed the
  training pane (plot, held-out points, epoch/step progress, chars/s, elapsed, ETA);
* model.keras: when its (mtime, size, inode) changes, the newest checkpoint is loaded
  (the trainer replaces it atomically) and becomes the sampler for the next round. A
  failed load keeps the previous sampler and is retried at the next change.

The watcher never writes to the run directory: no lock, no log (its stderr log goes
to a temp file), exports go to the current directory. Any number of watchers can
follow the same run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.message import Message
from textual.widgets import Footer

from engine.errors import CharlmError
from engine.rundir import MetricsTail
from tui.app import (AppOptions, CharlmApp, Run, quiet_tensorflow, run_in_terminal)
from tui.messages import SamplerReady
from tui.widgets.generation import GenerationPane
from tui.widgets.header import HeaderInfo, RunHeader
from tui.widgets.training import EpochHistory, LossPlot, TrainingPane, _number

log = logging.getLogger("charlm.tui")

POLL_INTERVAL = 1.0        # seconds between stat() checks of the run directory
RELOAD_MIN_INTERVAL = 2.0  # at most one checkpoint load per this many seconds
STALE_AFTER = 30.0         # seconds without new metrics before saying so


# -- messages from the follower thread ---------------------------------------------------------
@dataclass
class WatchOpened(Message):
    config: Any
    meta: dict
    vocab_size: int
    device: str
    generation: int


@dataclass
class WatchMetrics(Message):
    rows: list
    reset: bool
    generation: int


@dataclass
class WatchCheckpoint(Message):
    sampler: Any
    parameters: int
    step: int | None
    corpus: Any
    generation: int


class WatchHeader(RunHeader):
    """The run header, with "watching DIR" in place of "run DIR"."""

    def _parts(self):
        parts = super()._parts()
        if parts:
            last = parts[-1]
            plain = last.plain
            for label in ("run ", "sampling "):
                if plain.startswith(label):
                    last = last[len(label):]
                    break
            watching = type(last)()
            watching.append("watching ", style="bold yellow")
            watching.append_text(last)
            parts[-1] = watching
        return parts


def _signature(path: Path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class WatchApp(CharlmApp):
    """The sampling-only app, following a run another process trains."""

    def __init__(self, options: AppOptions) -> None:
        super().__init__(options)
        self.mode = "sample"          # the sampling flow and keys of --no-train
        self.watching = True
        if self.sample_length <= 0:  # trained with --length 0: the watcher still samples
            from engine.config import TrainConfig

            self.sample_length = TrainConfig().sample_length
        self.steps_per_epoch: int | None = None
        self.checkpoints_loaded = 0
        self.checkpoint_step: int | None = None
        self._marks: deque[tuple[float, int, int]] = deque(maxlen=30)  # (wall, step, chars)
        self._last_row_at = time.monotonic()

    def compose(self) -> ComposeResult:
        config = self.config
        yield WatchHeader(HeaderInfo(
            corpus=self.options.corpus, layers=config.layers, units=config.units,
            preset=config.preset, objective=config.objective,
            run_dir=self.options.run_dir or "", mode="sample"), id="header")
        yield TrainingPane(id="training")
        yield GenerationPane(self.temperatures, id="generation")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self, event) -> None:
        event.prevent_default()  # not CharlmApp.on_mount: no open_run, no training
        self.generation_pane.set_placeholder("waiting for a checkpoint of the run (TensorFlow is loading)…")
        self._generation += 1
        run_dir = Path(self.options.run_dir)
        self.run_state = Run(self._generation, self.options.corpus, run_dir, self.config)
        self.header.set_info(run_dir=str(run_dir))
        self.set_phase("loading", "watching: opening the run (loading TensorFlow)…")
        self.set_interval(5.0, self._check_stale)
        self.follow(self.run_state)

    # -- the follower thread -----------------------------------------------------------------
    @work(thread=True, exclusive=True, group="engine", exit_on_error=False)
    def follow(self, run: Run) -> None:
        generation, run_dir = run.generation, Path(run.run_dir)
        post = self.post_message
        with self.engine_thread(run, "watching the run failed", "Cannot watch the run"):
            quiet_tensorflow()
            from engine.rundir import RunDir
            from engine.sampler import Sampler
            from engine.tfsetup import device_name

            saved = RunDir(run_dir)
            while True:  # the trainer may not have written its vocabulary yet
                try:
                    config, vocab, meta = saved.load_config(), saved.load_vocab(), saved.corpus_meta()
                    break
                except CharlmError:
                    if run.stop.wait(POLL_INTERVAL):
                        return
            post(WatchOpened(config, meta, len(vocab), device_name(), generation))
            metrics = MetricsTail(saved.metrics_path)
            loaded_sig = attempted_sig = None
            last_load = 0.0
            corpus = None
            while not run.stop.is_set():
                try:
                    rows, reset = metrics.poll()
                except OSError as error:
                    log.warning("watch: reading metrics failed: %s", error)
                    rows, reset = [], False
                if rows or reset:
                    post(WatchMetrics(rows, reset, generation))
                sig = _signature(saved.model_path)
                if (sig is not None and sig != loaded_sig and sig != attempted_sig
                        and time.monotonic() - last_load >= RELOAD_MIN_INTERVAL):
                    attempted_sig, last_load = sig, time.monotonic()
                    try:
                        notices = []
                        model = RunDir(run_dir).load_model(compile=False, on_notice=notices.append)
                        if notices:
                            # model.prev.keras: an older checkpoint; retry model.keras at its next change
                            log.warning("watch: %s", notices[0])
                        sampler = Sampler.from_keras_model(model, vocab, lowercase=config.lowercase)
                        if corpus is None:
                            corpus = self._corpus_for_seeds(meta, config, sampler) or False
                        step = None
                        with contextlib.suppress(Exception):
                            step = json.loads(saved.state_path.read_text()).get("step")
                        loaded_sig = sig
                        post(WatchCheckpoint(sampler, int(model.count_params()),
                                             step if isinstance(step, int) else None,
                                             corpus or None, generation))
                    except Exception as error:  # keep the previous sampler; retry at the next change
                        log.warning("watch: loading the checkpoint failed: %s", error)
                run.stop.wait(POLL_INTERVAL)

    # -- messages ------------------------------------------------------------------------------
    def on_watch_opened(self, message: WatchOpened) -> None:
        if not self._current(message.generation):
            return
        config, meta = message.config, message.meta
        self.config = config
        self.options.config = config
        excerpts = meta.get("excerpts") if isinstance(meta.get("excerpts"), list) else []
        self.excerpts = [e for e in excerpts if isinstance(e, str) and e]
        self.header.set_info(corpus=meta.get("name") or "?", corpus_chars=meta.get("chars"),
                             vocab=message.vocab_size, layers=config.layers, units=config.units,
                             preset=config.preset, objective=config.objective,
                             device=message.device, run_dir=str(self.run_state.run_dir))
        self.training_pane.state.epochs = config.epochs
        self.set_phase("training", "watching: waiting for the trainer's metrics…")

    def on_watch_metrics(self, message: WatchMetrics) -> None:
        if not self._current(message.generation):
            return
        pane = self.training_pane
        if message.reset:
            pane.reset()
            self._marks.clear()
            self.steps_per_epoch = None
        plot, history = pane.query_one(LossPlot), pane.query_one(EpochHistory)
        s = pane.state
        previous_epoch_step = None
        for row in message.rows:
            step = row["step"]
            epoch = row.get("epoch") if isinstance(row.get("epoch"), int) else s.epoch
            train, val = _number(row.get("train_loss")), _number(row.get("val_loss"))
            wall, chars = _number(row.get("wall")), _number(row.get("chars"))
            if row.get("kind") == "epoch":
                if epoch and step % epoch == 0 and (self.steps_per_epoch is None or epoch == 1):
                    self.steps_per_epoch = self.steps_per_epoch or step // epoch
                if previous_epoch_step is not None and step > previous_epoch_step:
                    self.steps_per_epoch = step - previous_epoch_step
                previous_epoch_step = step
                plot.add_heldout(step, val)
                spe = self.steps_per_epoch
                history.add(epoch, step, train, val, not spe or step == epoch * spe)
                s.val_loss = val
            elif train is not None:
                plot.add_train(step, train)
            if train is not None:
                s.train_loss = train
            s.epoch, s.step = epoch, max(s.step if not message.reset else 0, step)
            if wall is not None:
                s.elapsed = wall
                if not self._marks or wall > self._marks[-1][0]:
                    self._marks.append((wall, step, int(chars or 0)))
        if message.rows:
            self._last_row_at = time.monotonic()
        spe = self.steps_per_epoch
        s.epochs = self.config.epochs
        if spe:
            s.batches_per_epoch = spe
            s.batch = min(spe, max(0, s.step - (s.epoch - 1) * spe))
        if len(self._marks) >= 2:
            (t0, s0, c0), (t1, s1, c1) = self._marks[-2], self._marks[-1]
            if t1 > t0 and c1 > c0:
                s.chars_per_sec = (c1 - c0) / (t1 - t0)
            (t0, s0, _), (t1, s1, _) = self._marks[0], self._marks[-1]
            if spe and t1 > t0 and s1 > s0:
                s.eta = max(0.0, (self.config.epochs * spe - s.step) / ((s1 - s0) / (t1 - t0)))
        if spe and s.step >= self.config.epochs * spe:
            s.eta = 0.0
            self.set_phase("finished", f"watching: the run finished ({self.config.epochs} epochs)")
        elif message.rows:
            self.set_phase("training", "watching: training in another process")
        pane.stats.refresh()

    def on_watch_checkpoint(self, message: WatchCheckpoint) -> None:
        if not self._current(message.generation):
            return
        self.checkpoints_loaded += 1
        self.checkpoint_step = message.step
        if message.corpus is not None and self.corpus is None:
            self.corpus = message.corpus
        self.header.set_info(parameters=message.parameters)
        where = f"checkpoint at step {message.step:,}" if message.step is not None else "new checkpoint"
        self.on_sampler_ready(SamplerReady(message.sampler, message.generation, where, now=False))

    def _check_stale(self) -> None:
        if self.phase == "training" and time.monotonic() - self._last_row_at > STALE_AFTER:
            quiet = int(time.monotonic() - self._last_row_at)
            self.training_pane.set_status(f"watching: no new metrics for {quiet} s", "paused")

    # -- actions ---------------------------------------------------------------------------------
    def action_export(self) -> None:
        """Export to the current directory: the run directory is never written."""
        run = self.run_state
        here = Path.cwd()
        if run is not None and here.resolve() == Path(run.run_dir).resolve():
            self.notify("watching never writes to the run directory: run it from another directory "
                        "to export", severity="warning")
            return
        if self.generation_pane.round is None:
            self.notify("nothing to export yet", severity="warning")
            return
        step = self.checkpoint_step if self.checkpoint_step is not None else "?"
        self.export_samples_to(here, f" (watching {run.run_dir})", f"checkpoint step {step}")

    async def action_quit(self) -> None:
        await self.stop_run("leaving (the trainer goes on)…")
        self.exit(0)


def build_watch_app(options: AppOptions) -> WatchApp:
    return WatchApp(options)


def run_watch(options: AppOptions) -> int:
    """Run the watcher in this terminal; its log goes to a temp file, never the run, and
    is removed after a clean exit (kept, and named, after a failure)."""
    quiet_tensorflow()
    log_path = Path(tempfile.gettempdir()) / f"charlm-tui-watch-{os.getpid()}.log"
    code = run_in_terminal(build_watch_app(options), log_path)
    if code == 0:
        log_path.unlink(missing_ok=True)
    elif log_path.exists():
        print(f"charlm-tui: the watcher's log is {log_path}", file=sys.stderr)
    return code
