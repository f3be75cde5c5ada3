"""`charlm-tui train`: headless training with a rich progress bar.

Prints what the book prints (corpus length, distinct characters, windows, the model
summary, and after every epoch 400 chars at each temperature). Ctrl-C, SIGTERM and
SIGHUP (a dropped SSH session) stop after the current batch with a checkpoint saved;
output to a terminal that went away is dropped, never fatal.
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from engine import events
from engine.config import TrainConfig
from engine.corpus import load_corpus
from engine.training import Trainer, check_length  # TensorFlow is imported only when training starts
from engine.windows import count_windows, split_point
from tui import cli

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}


class HeadlessTrainer:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.console = Console(highlight=False, soft_wrap=True)
        self.errors = Console(stderr=True, highlight=False, soft_wrap=True)  # one message, one line
        self.progress: Progress | None = None
        self.task = None
        self.trainer = None
        self.signal_received: int | None = None
        self.steps_per_epoch = 0
        self.output_lost = False

    # -- output that survives a vanished terminal --------------------------------------
    def say(self, *objects, **kwargs) -> None:
        if self.output_lost:
            return
        try:
            (self.progress.console if self.progress else self.console).print(*objects, **kwargs)
        except OSError:  # EIO / broken pipe: the terminal is gone; keep training quietly
            self.output_lost = True

    # -- the command -----------------------------------------------------------------------
    def run(self) -> int:
        args = self.args
        cli.preset(args.preset or "fast", **cli._overrides(args))  # bad settings fail before any work
        corpus = load_corpus(args.corpus or "nietzsche", lowercase=not args.keep_case,
                             encoding=args.encoding,
                             on_notice=lambda message: self.errors.print(f"note: {message}", markup=False),
                             on_progress=self._reading_progress())
        run_dir = Path(args.run) if args.run else cli.default_run_dir(corpus.name)
        config = cli.resolve_config(args, run_dir)
        if args.length is not None:
            config = TrainConfig.from_json({**config.to_json(), "sample_length": args.length})
        self._print_book_header(corpus, config)
        check_length(corpus, config)
        if args.dry_run:
            return self._dry_run(corpus, config, run_dir)

        tensorboard = None if args.tensorboard is None else Path(args.tensorboard or run_dir / "tensorboard")
        self.trainer = Trainer(corpus, config, run_dir, on_event=self.on_event, fresh=args.fresh,
                               tensorboard_dir=tensorboard)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in EXIT_CODES}
        try:
            with self._progress_bar() as self.progress:
                finished = self.trainer.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.progress = None
        self._print_summary(finished)
        if self.trainer.checkpoint_error:
            return 1
        return EXIT_CODES.get(self.signal_received, 0)

    def _reading_progress(self):
        started = time.monotonic()
        state = {"last": 0.0}

        def report(done: int, total: int) -> None:
            now = time.monotonic()
            if total > 64 << 20 and now - state["last"] > 1.0 and now - started > 1.0:
                state["last"] = now
                # `total` counts both passes over the file (vocabulary, then ids)
                self.errors.print(f"reading corpus: {done / total:.0%} of two passes over "
                                  f"{total / 2 / 2**20:,.0f} MiB")
        return report

    def _on_signal(self, signum, frame) -> None:
        if self.signal_received is None:
            self.signal_received = signum
            if self.trainer.chief:
                then = "stopping after this batch and saving a checkpoint..."
            else:
                then = "stopping every worker after the next batch; the chief saves a checkpoint..."
            self.say(f"[yellow]{signal.Signals(signum).name}: {then}[/]")
        self.trainer.stop()

    def _progress_bar(self) -> Progress:
        return Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]:.4f}"),
                        TextColumn("{task.fields[rate]:>9,.0f} chars/s"), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=self.console, transient=False,
                        disable=not self.console.is_terminal)

    # -- what the book prints -----------------------------------------------------------------
    def _print_book_header(self, corpus, config: TrainConfig) -> None:
        total = count_windows(len(corpus), config.maxlen, config.step)
        train = count_windows(split_point(len(corpus), config.val_fraction), config.maxlen, config.step)
        self.say(f"Corpus: {corpus.name} ({corpus.source})", markup=False)
        self.say(f"Corpus length: {len(corpus)}")
        self.say(f"Unique characters: {len(corpus.vocab)}")
        self.say(f"Number of sequences: {total} over the whole text (the book's count); "
                 f"{train} in the training split, the last {config.val_fraction:.0%} held out")

    def _dry_run(self, corpus, config: TrainConfig, run_dir: Path) -> int:
        parameters = cli._book_parameter_count(len(corpus.vocab), config)
        self.say(f"Model: {config.layers} x LSTM({config.units}) + Dense({len(corpus.vocab)}, softmax): "
                 f"{parameters:,} parameters")
        self.say(f"Run directory: {run_dir}", markup=False)
        self.say("Config: " + json.dumps(config.to_json(), sort_keys=True))
        if self.args.json:
            print(json.dumps({"dry_run": True, "corpus": corpus.name, "chars": len(corpus),
                              "vocab_size": len(corpus.vocab), "parameters": parameters,
                              "windows_total": count_windows(len(corpus), config.maxlen, config.step),
                              "run_dir": str(run_dir), "config": config.to_json()}))
        return 0

    def on_event(self, event) -> None:
        if isinstance(event, events.TrainingStarted):
            self.steps_per_epoch = event.steps_per_epoch
            self.say(event.model_summary, markup=False)
            where = f"resuming at step {event.resumed_from_step:,}" if event.resumed_from_step else "new run"
            if event.run_dir:
                worker = f", {event.worker}" if event.worker else ""
                self.say(f"Training on {event.device} in {event.run_dir} ({where}{worker})", markup=False)
            else:  # a multi-worker helper: the chief writes checkpoints, samples and metrics
                self.say(f"Training on {event.device} as {event.worker} ({where}); the chief keeps "
                         "the run directory", markup=False)
            if self.progress:
                self.task = self.progress.add_task("train", total=event.steps_per_epoch, epoch=event.epoch,
                                                   loss=float("nan"), rate=0.0)
        elif isinstance(event, events.BatchProgress) and self.progress and self.task is not None:
            self.progress.update(self.task, completed=event.batch, total=event.batches_per_epoch,
                                 epoch=event.epoch, loss=event.loss, rate=event.chars_per_sec)
        elif isinstance(event, events.EpochEnd):
            # A multi-worker helper leaves the held-out loss to the chief.
            val = f", held-out loss {event.val_loss:.4f}" if event.val_loss is not None else ""
            self.say(f"epoch {event.epoch}: train loss {event.train_loss:.4f}{val} nats/char"
                     + ("" if event.complete else " (partial epoch)"))
        elif isinstance(event, events.SamplesGenerated):
            self.say(f"\n--- Generating with seed: {event.seed_text!r}", markup=False)
            for temperature, text in event.samples.items():
                self.say(f"\n----- temperature: {temperature}", markup=False)
                self.say(event.seed_text + text, markup=False)
            self.say("")
        elif isinstance(event, events.CheckpointSaved):
            self.say(f"[dim]checkpoint saved: {escape(event.path)} (step {event.step:,})[/]")
        elif isinstance(event, events.Notice):
            self.say(f"[yellow]note: {escape(event.message)}[/]")

    def _print_summary(self, finished: events.TrainingFinished) -> None:
        per_epoch = self.steps_per_epoch
        if per_epoch and finished.step % per_epoch:  # part way through an epoch
            where = (f"step {finished.step:,} (epoch {finished.step // per_epoch + 1}, "
                     f"{finished.step % per_epoch:,} of {per_epoch:,} batches)")
        else:
            where = f"the end of epoch {finished.epoch}, step {finished.step:,}"
        self.say(f"Stopped ({finished.reason}) at {where}, "
                 f"after {finished.elapsed:,.0f} s at {finished.chars_per_sec:,.0f} target chars/s.")
        if self.trainer.checkpoint_error:
            self.errors.print(f"charlm-tui: error: the last checkpoint was not saved: "
                              f"{self.trainer.checkpoint_error}", markup=False)
        if self.args.json and not self.output_lost:
            try:
                print(json.dumps({"reason": finished.reason, "epoch": finished.epoch, "step": finished.step,
                                  "train_loss": finished.train_loss, "val_loss": finished.val_loss,
                                  "elapsed": finished.elapsed, "chars_per_sec": finished.chars_per_sec,
                                  "run_dir": finished.run_dir}), flush=True)
            except OSError:
                pass
