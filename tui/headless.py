"""`charlm-tui train`: headless training with a rich progress bar, a view of a RunSession.

Prints what the book prints (corpus length, distinct characters, windows, the model
summary, and after every epoch 400 chars at each temperature). The session trains on a
thread of its own, so that this one answers signals at once, even during a long step.
It stops on Ctrl-C, SIGTERM and SIGHUP (a dropped SSH session), and when its output
goes away without a signal (a terminal gone: EIO; a pipe closed: EPIPE), after the
current batch with a checkpoint saved, within a bounded time (tui/lifeline.py).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from engine import events, progress
from engine.data.windows import check_length, count_windows, split_point
from engine.modeling.model import parameter_count  # (no TensorFlow: it is imported when a model is built)
from engine.run.session import RunSession
from engine.scale import memory
from engine.scale.memory import refuse_if_too_big
from tui import options
from tui.lifeline import MULTIWORKER_STOP_DEADLINE, Lifeline
from tui.streams import Guarded
from tui.visible import visible, visible_line


def run(args: argparse.Namespace) -> int:
    return HeadlessTrainer(args).run()


class HeadlessTrainer:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.session = RunSession(options.run_request(self.args), on_event=self.on_event)
        self.lifeline = Lifeline(lambda: self.session, on_stop=self._on_signal, say=self._say_error)
        # A terminal or pipe that goes away stops the run as the signal it stands for would.
        self.stdout = Guarded(sys.stdout, on_lost=self.lifeline.request)
        self.console = Console(file=self.stdout, highlight=False, soft_wrap=True)
        self.errors = Console(file=Guarded(sys.stderr, on_lost=self.lifeline.request), highlight=False,
                              soft_wrap=True)  # one message, one line
        self.bar: Progress | None = None
        self.task = None
        self.progress = progress.Progress()
        self.read_tenths = 0
        self.started = time.monotonic()

    # -- output that survives a vanished terminal --------------------------------------
    def say(self, *objects, **kwargs) -> None:
        """Print (through the bar while it shows); nothing once the output is gone."""
        (self.bar.console if self.bar else self.console).print(*objects, **kwargs)

    def _say_error(self, message: str) -> None:
        self.errors.print(f"charlm-tui: {message}", markup=False)

    # -- the command -----------------------------------------------------------------------
    def run(self) -> int:
        self.lifeline.install()  # from here on, a signal stops the run whatever it is doing
        try:
            return self._run()
        finally:
            self.lifeline.ended.set()  # leaving by itself: the watchdog need not force it
            self.lifeline.uninstall()

    def _run(self) -> int:
        session = self.session
        session.request.check()     # bad settings fail before any work,
        options.refuse_a_model_too_big(session.request)  # a model too big for this machine too,
        config = session.prepare()  # a bad corpus before anything is written
        corpus = session.corpus
        self._print_book_header(corpus, config)
        check_length(corpus, config)
        refuse_if_too_big(config, len(corpus.vocab))  # (with the corpus's own vocabulary)
        if self.args.dry_run:
            return self._dry_run(corpus, config)
        try:
            with self._progress_bar() as self.bar:
                finished = self._train()
        finally:
            self.bar = None
        if finished is not None:
            self._print_summary(finished)
        if session.checkpoint_error:
            self.errors.print(visible_line(f"charlm-tui: error: the last checkpoint was not saved: "
                                           f"{session.checkpoint_error}"), markup=False, emoji=False)
        return session.exit_code

    def _train(self) -> events.TrainingFinished | None:
        """session.run() on a thread of its own, while this (main) thread waits, ready to
        run signal handlers at once: Python runs them only on the main thread, between
        two bytecodes, never in the middle of a TensorFlow step. Not under the
        multi-worker strategy, which must be made on the main thread (engine/scale/distribute.py
        takes SIGTERM back from TensorFlow's coordination service there); its stops ride
        on the next step's collective anyway."""
        if self.session.config.strategy == "multiworker":
            self.lifeline.stop_deadline = MULTIWORKER_STOP_DEADLINE
            return self.session.run()
        outcome: dict = {}

        def train() -> None:
            try:
                outcome["finished"] = self.session.run()
            except BaseException as error:  # raised again here, on the main thread
                outcome["error"] = error

        thread = threading.Thread(target=train, name="charlm-training", daemon=True)
        thread.start()
        while thread.is_alive() and not self.session.done.is_set():  # (done: stopped while loading)
            thread.join(0.25)
        thread.join(0.25)
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("finished")

    def _on_signal(self, signum: int) -> None:
        if signum != self.session.signal_received or signum == signal.SIGPIPE:
            return  # said once, for the first signal (a pipe closed has nobody to tell)
        trainer = self.session.trainer
        if trainer is None or trainer.chief:
            then = "stopping after this batch and saving a checkpoint..."
        else:
            then = "stopping every worker after the next batch; the chief saves a checkpoint..."
        self.say(f"[yellow]{signal.Signals(signum).name}: {then}[/]")

    def _progress_bar(self) -> Progress:
        return Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]:.4f}"),
                        TextColumn("{task.fields[rate]:>9,.0f} chars/s"), TimeElapsedColumn(),
                        TextColumn("ETA {task.fields[eta]}"), console=self.console, transient=False,
                        disable=not self.console.is_terminal)

    # -- what the book prints -----------------------------------------------------------------
    def _print_book_header(self, corpus, config) -> None:
        total = count_windows(len(corpus), config.maxlen, config.step)
        train = count_windows(split_point(len(corpus), config.val_fraction), config.maxlen, config.step)
        self.say(visible_line(f"Corpus: {corpus.name} ({corpus.source})"), markup=False, emoji=False)
        self.say(f"Corpus length: {len(corpus)}")
        self.say(f"Unique characters: {len(corpus.vocab)}")
        self.say("Case: lower-cased (--keep-case to keep it)" if corpus.lowercase
                 else "Case: kept as written (--lowercase to lower-case it)")
        self.say(f"Number of sequences: {total} over the whole text (the book's count); "
                 f"{train} in the training split, the last {config.val_fraction:.0%} held out")

    def _dry_run(self, corpus, config) -> int:
        parameters = parameter_count(len(corpus.vocab), config)
        run_dir = self.session.run_dir
        self.say(f"Model: {config.layers} x LSTM({config.units}) + Dense({len(corpus.vocab)}, softmax): "
                 f"{parameters:,} parameters")
        self.say(memory.describe(memory.estimate(len(corpus.vocab), config)), markup=False)
        self.say(visible_line(f"Run directory: {run_dir}"), markup=False, emoji=False)
        self.say("Config: " + json.dumps(config.to_json(), sort_keys=True))
        if self.args.json:
            print(json.dumps({"dry_run": True, "corpus": corpus.name, "chars": len(corpus),
                              "vocab_size": len(corpus.vocab), "parameters": parameters,
                              "windows_total": count_windows(len(corpus), config.maxlen, config.step),
                              "run_dir": str(run_dir), "config": config.to_json()}))
        return 0

    def on_event(self, event) -> None:
        self.progress = progress.reduce(self.progress, event)
        if isinstance(event, events.TrainingStarted):
            self.say(event.model_summary, markup=False)
            where = f"resuming at step {event.resumed_from_step:,}" if event.resumed_from_step else "new run"
            if event.run_dir:
                worker = f", {event.worker}" if event.worker else ""
                self.say(visible_line(f"Training on {event.device} in {event.run_dir} ({where}{worker})"),
                         markup=False, emoji=False)
            else:  # a multi-worker helper: the chief writes checkpoints, samples and metrics
                self.say(f"Training on {event.device} as {event.worker} ({where}); the chief keeps "
                         "the run directory", markup=False)
            # (no bar for a session with nothing to train: it would show "loss nan" and 0 chars/s)
            done = bool(event.steps_per_epoch and event.epochs
                        and event.resumed_from_step // event.steps_per_epoch >= event.epochs)
            if self.bar and not done:  # with every field its columns show, before any progress is known
                self.task = self.bar.add_task("train", total=event.steps_per_epoch, epoch=event.epoch,
                                              loss=float("nan"), rate=0.0,
                                              eta=progress.format_duration(None))
        elif isinstance(event, events.EpochEnd):
            # A multi-worker helper leaves the held-out loss to the chief.
            val = f", held-out loss {event.val_loss:.4f}" if event.val_loss is not None else ""
            self.say(f"epoch {event.epoch}: train loss {event.train_loss:.4f}{val} nats/char"
                     + ("" if event.complete else " (partial epoch)"))
        elif isinstance(event, events.SamplesGenerated):
            self.say(f"\n--- Generating with seed: {event.seed_text!r}", markup=False, emoji=False)
            for temperature, text in event.samples.items():
                self.say(f"\n----- temperature: {options.temperature_label(temperature)}", markup=False)
                self.say(visible(event.seed_text + text), markup=False, emoji=False)
            self.say("")
        elif isinstance(event, events.CheckpointSaved):
            self.say(f"[dim]checkpoint saved: {escape(visible_line(event.path))} (step {event.step:,})[/]",
                     emoji=False)
        elif isinstance(event, events.Notice):
            self.say(f"[yellow]note: {escape(visible_line(event.message))}[/]", emoji=False)
        elif isinstance(event, events.Preparing) and event.fraction is not None:
            self._reading_progress(event)
        self._update_bar()

    def _update_bar(self) -> None:
        if not self.bar or self.task is None:
            return
        shown = self.progress
        self.bar.update(self.task, completed=shown.batch, total=shown.batches_per_epoch or None,
                        epoch=shown.epoch,
                        loss=shown.train_loss if shown.train_loss is not None else float("nan"),
                        rate=shown.chars_per_sec, eta=progress.format_duration(shown.eta))

    def _reading_progress(self, event: events.Preparing) -> None:
        """A big corpus takes a while to read: say how far, every tenth of the way."""
        tenth = int(event.fraction * 10)
        slow = time.monotonic() - self.started > 1.0 and event.total_bytes > 2 * (64 << 20)
        if slow and 0 < tenth < 10 and tenth > self.read_tenths:
            self.read_tenths = tenth
            self.errors.print(f"reading corpus: {event.fraction:.0%} of two passes")

    def _print_summary(self, finished: events.TrainingFinished) -> None:
        ended = progress.describe_end(finished.reason).capitalize()
        rate = f" at {finished.chars_per_sec:,.0f} target chars/s" if finished.chars_per_sec else ""
        self.say(f"{ended} at {progress.describe_position(self.progress)}, "
                 f"after {finished.elapsed:,.0f} s{rate}.")
        if finished.long_context_loss is not None:
            self.say(f"Held-out loss with 200+ characters of context, the state carried: "
                     f"{finished.long_context_loss:.4f} (in windows: {finished.val_loss:.4f}).")
        if self.args.json:
            print(json.dumps({"reason": finished.reason, "epoch": finished.epoch, "step": finished.step,
                              "train_loss": finished.train_loss, "val_loss": finished.val_loss,
                              "elapsed": finished.elapsed, "chars_per_sec": finished.chars_per_sec,
                              "run_dir": finished.run_dir, "long_context_loss": finished.long_context_loss}),
                  file=self.stdout, flush=True)
