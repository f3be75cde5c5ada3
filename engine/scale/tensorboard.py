"""TensorBoard logs for a run, written from its events with `tf.summary`.

The layout is Keras's (`train/` and `validation/` folders: `tensorboard --logdir DIR`
shows them side by side), and every scalar's step is the optimizer step, so a resumed
run continues its curves. Keras's own TensorBoard callback is not used: it restarts its
batch count with every `fit` call (one per epoch here) and, with a batch interval, drops
the epoch summaries.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from engine import events
from engine.errors import TrainingError
from engine.tfsetup import tensorflow


class TensorBoardLogger:
    """An event subscriber: train loss and chars/s every `update_freq` steps, train and
    held-out loss per epoch, the samples as text."""

    def __init__(self, log_dir, update_freq: int):
        if importlib.util.find_spec("tensorboard") is None:
            raise TrainingError("--tensorboard needs the tensorboard package: "
                                "pip install 'charlm-tui[tensorboard]'")

        self.tf = tensorflow()
        self.log_dir = Path(log_dir)
        self.update_freq = update_freq
        self._train = self.tf.summary.create_file_writer(str(self.log_dir / "train"))
        self._validation = self.tf.summary.create_file_writer(str(self.log_dir / "validation"))
        self._last_rate_step = -1

    def __call__(self, event) -> None:
        if isinstance(event, events.BatchProgress) and event.step - self._last_rate_step >= self.update_freq:
            self._last_rate_step = event.step
            with self._train.as_default(step=event.step):
                self.tf.summary.scalar("chars_per_sec", event.chars_per_sec)
                self.tf.summary.scalar("batch_loss", event.loss)  # the epoch's running mean, as Keras logs it
        elif isinstance(event, events.EpochEnd) and event.val_loss is not None:
            with self._validation.as_default(step=event.step):
                self.tf.summary.scalar("heldout_loss", event.val_loss)
            with self._train.as_default(step=event.step):
                self.tf.summary.scalar("train_loss", event.train_loss)
            self._validation.flush()
        elif isinstance(event, events.SamplesGenerated):
            with self._train.as_default(step=event.epoch):
                for temperature, text in event.samples.items():
                    # Markdown: indent as code so newlines and spacing survive
                    body = "    " + (event.seed_text + text).replace("\n", "\n    ")
                    self.tf.summary.text(f"samples/temperature_{temperature}", body)
            self._train.flush()

    def close(self) -> None:
        self._train.close()
        self._validation.close()
