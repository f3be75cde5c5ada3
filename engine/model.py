"""The Keras model: integer character ids in, a softmax over the vocabulary out.

Only built-in layers, so `model.keras` loads with `keras.saving.load_model(path,
safe_mode=True)` without our code. `CategoryEncoding(one_hot)` turns ids into the
book's one-hot vectors inside the model (no parameters), keeping the book's count of
102,585 for LSTM(128) on 57 characters. Keras picks the cuDNN kernel on a GPU for an
LSTM with its default activations and no recurrent dropout, which is why dropout is a
separate layer here.
"""

from __future__ import annotations

import io

import numpy as np

from engine.config import TrainConfig
from engine.tfsetup import keras as _keras


def build_model(vocab_size: int, config: TrainConfig):
    keras = _keras()
    layers = keras.layers
    # Any length in: the book's objective reads the state after the last char; the
    # "all" objective predicts after every char; samplers may feed any prefix.
    inputs = keras.Input(shape=(None,), dtype="int32", name="char_ids")
    # (batch, time, 1): CategoryEncoding squeezes a trailing axis of 1, so without it a
    # one-char input would lose its time axis.
    x = layers.Reshape((-1, 1), name="ids_column")(inputs)
    x = layers.CategoryEncoding(num_tokens=vocab_size, output_mode="one_hot", name="one_hot")(x)
    for i in range(config.layers):
        last = i == config.layers - 1
        x = layers.LSTM(config.units, return_sequences=(not last) or config.objective == "all",
                        name=f"lstm_{i + 1}")(x)
        if config.dropout:
            x = layers.Dropout(config.dropout, name=f"dropout_{i + 1}")(x)
    # float32 softmax even under a mixed-precision policy.
    outputs = layers.Dense(vocab_size, activation="softmax", dtype="float32", name="next_char")(x)
    model = keras.Model(inputs, outputs, name=f"charlm_{config.preset}")
    compile_model(model, config)
    return model


def compile_model(model, config: TrainConfig) -> None:
    keras = _keras()
    clip = {"clipnorm": config.clipnorm} if config.clipnorm else {}
    if config.optimizer == "rmsprop":
        optimizer = keras.optimizers.RMSprop(learning_rate=config.lr, **clip)
    else:
        optimizer = keras.optimizers.Adam(learning_rate=config.lr, **clip)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")


def summary_text(model) -> str:
    buffer = io.StringIO()
    model.summary(print_fn=lambda line, *args, **kwargs: buffer.write(line + "\n"))
    return buffer.getvalue().rstrip()


def heldout_loss(model, windows, max_batches: int | None = None) -> float:
    """Mean cross-entropy (nats/char) over held-out targets; targets of -1 are skipped.

    Works for both objectives, so the book's model and ours are scored alike: every
    scored char is predicted from at least `maxlen - step` chars of context.
    """
    total, count = 0.0, 0
    if getattr(model, "_distribute_strategy", None) is None:
        predict = model.predict_on_batch
    else:
        # Under a distribution strategy predict_on_batch would run the whole batch on every
        # replica (and, across workers, wait for them all); calling the model reads this
        # process's copy of the weights on one device.
        from engine.tfsetup import tensorflow

        predict = tensorflow().function(lambda x: model(x, training=False), reduce_retracing=True)
    batches = -(-windows.count // windows.batch_size)  # every window, ragged last batch too
    if max_batches is not None:
        batches = min(batches, max_batches)
    for b in range(batches):
        x, y = windows.batch(0, b)
        probs = np.asarray(predict(x), dtype=np.float64)
        if y.ndim == 1:
            picked = probs[np.arange(len(y)), y]
        else:
            scored = y >= 0
            picked = probs[scored, y[scored]]
        total += float(-np.log(np.maximum(picked, 1e-12)).sum())
        count += picked.size
    return total / max(count, 1)


def parameter_count(vocab_size: int, config: TrainConfig) -> int:
    """What build_model's network holds, without Keras: LSTM 4(u(i+u)+u), Dense uV+V."""
    total, inputs = 0, vocab_size
    for _ in range(config.layers):
        total += 4 * (config.units * (inputs + config.units) + config.units)
        inputs = config.units
    return total + inputs * vocab_size + vocab_size

