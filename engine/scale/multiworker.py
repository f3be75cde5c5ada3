"""Training across processes with tf.distribute.MultiWorkerMirroredStrategy.

Keras 3's `fit` cannot drive this strategy (keras-team/keras#20585: it reduces the
first batch and the logged loss in ways the collective ops refuse), so this module
runs the same optimizer step itself, inside `strategy.run`, and calls the same Keras
callbacks `fit` would. Three things matter more here than on one machine:

- Every worker must take the same steps in the same order, or the gradient all-reduce
  waits forever. A stop (Ctrl-C, time budget) asked for on any worker rides on the
  next step's collective, and every worker stops after that step.
- Every worker must train the same model on the same data: the others take the chief's
  settings (`broadcast_json`), then `agree` compares a fingerprint of the corpus.
- Only the chief has the run directory; `broadcast_from_chief` hands its weights and
  optimizer state (a resumed checkpoint) to the others.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable

import numpy as np

from engine.errors import TrainingError
from engine.tfsetup import keras, tensorflow

# What a worker asks of the others with each step (see MultiWorkerLoop.fit).
NO_STOP, STOP_BUDGET, STOP_USER = 0, 1, 2


def fingerprint(corpus_ids: np.ndarray, vocab: list[str]) -> float:
    """A 48-bit hash (exact in float64, so it survives an all-reduce) of the corpus as
    encoded (the settings need none: every worker has taken the chief's by then)."""
    digest = hashlib.blake2b(digest_size=6)
    digest.update(json.dumps(vocab).encode())
    digest.update(np.ascontiguousarray(corpus_ids).view(np.uint8))
    return float(int.from_bytes(digest.digest(), "big"))


class WorkerLost(TrainingError):
    """A collective failed: another worker stopped, crashed or became unreachable."""


def lost_contact(error: Exception) -> WorkerLost:
    text = getattr(error, "message", None) or str(error)
    # TensorFlow names the tasks that stopped answering as /job:worker/replica:0/task:1.
    tasks = sorted(set(re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", text)))
    who = " and ".join(f"{job} {task}" for job, task in tasks) or "another worker"
    return WorkerLost(f"lost contact with {who} (stopped, crashed or unreachable); start every "
                      "worker again to resume from the chief's last checkpoint")


class Collectives:
    """Sums and broadcasts of small arrays over every replica of every worker."""

    JSON_BYTES = 1 << 14  # room for a TrainConfig as JSON (about 700 bytes)

    def __init__(self, strategy):
        self.tf, self.strategy = tensorflow(), strategy
        tf = self.tf

        @tf.function
        def total(values, only_chief):
            def replica_fn(values):
                context = tf.distribute.get_replica_context()
                # Replica 0 of the sync group lives on the chief (worker 0 if none is named).
                keep = tf.logical_or(tf.logical_not(only_chief),
                                     tf.equal(context.replica_id_in_sync_group, 0))
                return [context.all_reduce("SUM", tf.where(keep, v, tf.zeros_like(v))) for v in values]
            return strategy.run(replica_fn, args=(values,))
        self._total = total

    def sum(self, values: list) -> list[np.ndarray]:
        return self._call(values, only_chief=False)

    def broadcast(self, values: list) -> list[np.ndarray]:
        """The chief's `values` on every worker (the others pass arrays of the same shapes)."""
        return self._call(values, only_chief=True)

    def broadcast_json(self, data) -> dict:
        encoded = json.dumps(data, sort_keys=True).encode()
        if len(encoded) > self.JSON_BYTES:
            raise TrainingError("the settings are too long to send to the other workers")
        buffer = np.zeros(self.JSON_BYTES, dtype=np.float64)
        buffer[: len(encoded)] = np.frombuffer(encoded, dtype=np.uint8)
        received = self.broadcast([buffer])[0].astype(np.uint8).tobytes().rstrip(b"\0")
        return json.loads(received)

    def agree(self, mine: float) -> None:
        """Raise on every worker unless every worker computed the chief's fingerprint."""
        chief = float(self.broadcast([np.float64(mine)])[0])
        if self.sum([np.float64(chief != mine)])[0]:
            raise TrainingError("a worker holds a different corpus from the chief's: give every worker "
                                "the same corpus file (and the same --lowercase or --keep-case and "
                                "--encoding)")

    def _call(self, values: list, only_chief: bool) -> list[np.ndarray]:
        tf = self.tf
        tensors = [tf.constant(np.asarray(v, dtype=np.float64)) for v in values]
        try:
            results = self._total(tensors, tf.constant(only_chief))
        except tf.errors.OpError as error:
            raise lost_contact(error) from None
        return [self.strategy.experimental_local_results(r)[0].numpy() for r in results]


class MultiWorkerLoop:
    """Training steps across workers, for one model."""

    def __init__(self, collectives: Collectives, model, global_batch: int, targets_per_window: int):
        self.collectives = collectives
        self.tf, self.keras = collectives.tf, keras()
        self.strategy = collectives.strategy
        self.model = model
        self.targets_per_batch = global_batch * targets_per_window
        self._train_step = self._make_train_step()

    def _state_variables(self) -> list:
        return list(self.model.variables) + list(self.model.optimizer.variables)

    def broadcast_from_chief(self, values: list[np.ndarray]) -> None:
        """Set every worker's weights and optimizer state to `values` as the chief has them
        (the other workers pass arrays of the right shapes; their contents are ignored)."""
        variables = self._state_variables()
        if len(values) != len(variables):
            raise TrainingError("the checkpoint's optimizer state does not match the model")
        for variable, value in zip(variables, self.collectives.broadcast(values)):
            variable.assign(np.asarray(value).astype(variable.dtype).reshape(variable.shape))

    def local_state(self) -> list[np.ndarray]:
        return [np.asarray(v.numpy()) for v in self._state_variables()]

    # -- training ------------------------------------------------------------------------------
    def _make_train_step(self):
        tf, keras, strategy, model = self.tf, self.keras, self.strategy, self.model
        per_batch = float(self.targets_per_batch)

        def replica_step(x, y, requests):
            with tf.GradientTape() as tape:
                probs = model(x, training=True)
                # Summed over this replica's share, divided by the global count: the
                # all-reduced gradient is then the gradient of the global mean.
                loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(y, probs)) / per_batch
                scaled = model.optimizer.scale_loss(loss)  # loss scaling under mixed_float16
            gradients = tape.gradient(scaled, model.trainable_variables)
            model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            # One collective carries the loss and every worker's stop requests.
            context = tf.distribute.get_replica_context()
            return context.all_reduce("SUM", tf.concat([[tf.cast(loss, tf.float32)], requests], 0))

        @tf.function
        def train_step(iterator, requests):
            x, y = next(iterator)
            totals = strategy.run(replica_step, args=(x, y, requests))
            return strategy.experimental_local_results(totals)[0]
        return train_step

    def fit(self, dataset, epoch: int, batches: int, callbacks: list,
            stop_request: Callable[[], int]) -> int:
        """`batches` batches of epoch `epoch`, doing what `model.fit` does.

        `stop_request()` is asked after every batch (NO_STOP, STOP_BUDGET or STOP_USER).
        Returns the strongest request any worker made; every worker has then stopped
        after the same batch. A NaN loss (the same on every worker) ends the loop at once.
        """
        tf = self.tf
        options = tf.data.Options()
        # Every worker builds the same batches and keeps its replicas' share of each.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        iterator = iter(self.strategy.experimental_distribute_dataset(dataset.with_options(options)))
        callback_list = self.keras.callbacks.CallbackList(callbacks, model=self.model)
        self.model.stop_training = False
        callback_list.on_train_begin()
        callback_list.on_epoch_begin(epoch)
        request, agreed, loss_sum, done = NO_STOP, NO_STOP, 0.0, 0
        try:
            for batch in range(batches):
                callback_list.on_train_batch_begin(batch)
                totals = self._train_step(iterator, tf.constant(_flags(request))).numpy()
                loss_sum += float(totals[0])
                done = batch + 1
                callback_list.on_train_batch_end(batch, {"loss": loss_sum / done})
                agreed = _strongest(totals[1:])
                if agreed or not math.isfinite(float(totals[0])):
                    break
                # A request made now travels with the next step, so all stop after it.
                request = max(request, stop_request())
            if not agreed:  # requests made after the last batch still need settling
                agreed = _strongest(self.collectives.sum(list(_flags(request))))
        except tf.errors.OpError as error:
            raise lost_contact(error) from None
        callback_list.on_epoch_end(epoch, {"loss": loss_sum / done} if done else {})
        callback_list.on_train_end()
        return agreed


def _flags(request: int) -> np.ndarray:
    return np.array([request == STOP_BUDGET, request == STOP_USER], dtype=np.float32)


def _strongest(totals) -> int:
    """The strongest request in all-reduced flags (a count of workers per kind)."""
    budget, user = (float(t) for t in totals)
    return STOP_USER if user else STOP_BUDGET if budget else NO_STOP
