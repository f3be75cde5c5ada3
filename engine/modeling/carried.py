"""Training with the LSTM's state carried from one batch to the next (truncated
backpropagation through time), on the very model the run saves and samples.

A window from a zero state can learn nothing longer than itself: where a line ends 68
characters on, whether a quote is open. Here each row of a batch continues the row of
the batch before (engine.data.windows.Streams), and the state the model ended the last
batch with is where it starts the next one: what it learns to keep in its state is what
the sampler, which carries the state through everything it generates, runs on.

The model's own layers do the work: a second Keras graph is built from the same LSTM
cells and classifier (`keras.layers.RNN(cell, return_state=True)`), so the variables are
the model's, the gradients are applied by the model's optimizer (its step count, learning
rate and clipping), and what is saved is the ordinary model. Gradients reach back one
batch (`length` characters); the state, without gradients, reaches back to the start of
the pass.
"""

from __future__ import annotations

import numpy as np

from engine.tfsetup import keras as _keras
from engine.tfsetup import tensorflow


class CarriedStep:
    """One optimizer step on a (streams, length) batch, starting from the state the last
    one ended with; `reset()` starts the next from zeros."""

    def __init__(self, model, streams: int, length: int) -> None:
        keras, tf = _keras(), tensorflow()
        self.model = model
        ids = keras.Input(batch_shape=(streams, length), dtype="int32")
        x = model.get_layer("one_hot")(model.get_layer("ids_column")(ids))
        self.states, inputs, outputs = [], [ids], []
        for layer in model.layers:
            if isinstance(layer, keras.layers.LSTM):
                h0 = keras.Input(batch_shape=(streams, layer.units))
                c0 = keras.Input(batch_shape=(streams, layer.units))
                x, h, c = keras.layers.RNN(layer.cell, return_sequences=True, return_state=True)(
                    x, initial_state=[h0, c0])
                inputs += [h0, c0]
                outputs += [h, c]
                self.states += [tf.Variable(tf.zeros((streams, layer.units)), trainable=False)
                                for _ in range(2)]
            elif isinstance(layer, keras.layers.Dropout):
                x = layer(x)
        probs = model.get_layer("next_char")(x)
        self.graph = keras.Model(inputs, [probs, *outputs])
        self._step = tf.function(self._train_step, reduce_retracing=True)

    def _train_step(self, x, y):
        tf = tensorflow()
        model = self.model
        with tf.GradientTape() as tape:
            probs, *states = self.graph([x, *self.states], training=True)
            loss = tf.reduce_mean(_keras().losses.sparse_categorical_crossentropy(y, probs))
        variables = model.trainable_variables
        model.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        for variable, state in zip(self.states, states, strict=True):
            variable.assign(state)
        return loss

    def reset(self) -> None:
        for variable in self.states:
            variable.assign(np.zeros(variable.shape, dtype=np.float32))

    def __call__(self, x: np.ndarray, y: np.ndarray) -> float:
        """The batch's mean loss (nats/char), after the step."""
        return float(self._step(x, y))
