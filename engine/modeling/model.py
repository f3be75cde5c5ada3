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
from engine.tfsetup import tensorflow


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


def use_xla_for_stacked_lstms(model, config: TrainConfig) -> None:
    """Let XLA compile the steps of a stacked LSTM on a CPU-only machine, where Keras leaves
    it off ("auto"). It fuses each layer's per-character ops: a step of two layers of 128
    takes 1.76x less time (bench/xla_cpu.py), one of a single layer none (and a short run
    or a test would pay the compile). With a GPU or a strategy Keras's own choice stands.
    The saved model is unchanged: this sets the model's property, not its compile config."""
    if (config.layers > 1 and not under_a_strategy(model)
            and not tensorflow().config.list_physical_devices("GPU")):
        model.jit_compile = True


def summary_text(model) -> str:
    buffer = io.StringIO()
    model.summary(print_fn=lambda line, *args, **kwargs: buffer.write(line + "\n"))
    return buffer.getvalue().rstrip()


def heldout_loss(model, windows, max_batches: int | None = None, stop=None) -> float | None:
    """Mean cross-entropy (nats/char) over held-out targets; targets of -1 are skipped.

    Works for both objectives, so the book's model and ours are scored alike: every
    scored char is predicted from at least `maxlen - step` chars of context. None if
    `stop` (a threading.Event) is set before the end: a user quitting does not wait.
    """
    total, count = 0.0, 0
    if not under_a_strategy(model):
        predict = model.predict_on_batch
    else:
        # Under a distribution strategy predict_on_batch would run the whole batch on every
        # replica (and, across workers, wait for them all); calling the model reads this
        # process's copy of the weights on one device.
        predict = tensorflow().function(lambda x: model(x, training=False), reduce_retracing=True)
    batches = -(-windows.count // windows.batch_size)  # every window, ragged last batch too
    if max_batches is not None:
        batches = min(batches, max_batches)
    for b in range(batches):
        if stop is not None and stop.is_set():
            return None
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


def under_a_strategy(model) -> bool:
    """Whether the model runs under a tf.distribute strategy (mirrored, multi-worker)
    rather than TensorFlow's default one: the strategy it was built under (Keras's
    `Model.distribute_strategy`, else the current one), or the one whose scope we are in.
    Outside every scope `tf.distribute.get_strategy()` is the default strategy."""
    tf = tensorflow()
    return tf.distribute.has_strategy() or model.distribute_strategy is not tf.distribute.get_strategy()


def parameter_count(vocab_size: int, config: TrainConfig) -> int:
    """What build_model's network holds, without Keras: LSTM 4(u(i+u)+u), Dense uV+V."""
    total, inputs = 0, vocab_size
    for _ in range(config.layers):
        total += 4 * (config.units * (inputs + config.units) + config.units)
        inputs = config.units
    return total + inputs * vocab_size + vocab_size


# -- is a saved network ours? -----------------------------------------------------------------
# The numpy sampler and the resumed training assume exactly the network build_model makes:
# LSTMs with tanh/sigmoid read forwards, a softmax over the vocabulary. A .keras file
# holding only allowed layer types but another network (relu, go_backwards, an extra
# Dense) would load and then fail deep inside, or worse, sample wrong text without a word.
# So the checkpoint's config.json is compared with build_model's shape before Keras
# builds anything from it. Dropout is not compared with config.json (a resumed run may
# change --dropout; the network keeps its first layers), nor are dtype policies.


class _NotOurs(Exception):
    """A difference between a saved network and the one build_model makes."""


def _require(holds: bool, difference: str) -> None:
    if not holds:
        raise _NotOurs(difference)


def architecture_problem(saved: dict, config: TrainConfig, vocab_size: int) -> str | None:
    """Why the Keras config.json of a checkpoint is not the network that
    build_model(vocab_size, config) makes, as a phrase, or None if it is."""
    try:
        _check_network(saved, config, vocab_size)
    except _NotOurs as difference:
        return f"it is not the network charlm-tui builds for this run ({difference}); refused"
    return None


def _check_network(saved, config: TrainConfig, vocab_size: int) -> None:
    _require(isinstance(saved, dict) and saved.get("class_name") == "Functional"
             and isinstance(saved.get("config"), dict), "not a functional model")
    layers = saved["config"].get("layers")
    _require(isinstance(layers, list)
             and all(isinstance(layer, dict) and isinstance(layer.get("config"), dict) for layer in layers),
             "no list of layers")
    kinds = [layer.get("class_name") for layer in layers]
    expected = _layer_kinds(config.layers, dropout="Dropout" in kinds)
    _require(kinds == expected, f"layers {_shown(kinds)}, not {_shown(expected)}")
    names = [layer.get("name") for layer in layers]
    _require(all(isinstance(name, str) for name in names) and len(set(names)) == len(names),
             "layers without names of their own")
    for previous, layer in zip(names, layers[1:]):
        _require(_single_input(layer) == previous, f"{layer.get('name')!r} does not read {previous!r} alone")
    _require(_node_name(saved["config"].get("input_layers")) == names[0]
             and _node_name(saved["config"].get("output_layers")) == names[-1], "other inputs or outputs")
    lstm_index = 0
    for layer in layers:
        checks = _LAYER_CHECKS[layer["class_name"]]
        if layer["class_name"] == "LSTM":
            lstm_index += 1
            sequences = lstm_index < config.layers or config.objective == "all"
            checks = checks(config.units, sequences)
        elif layer["class_name"] in ("CategoryEncoding", "Dense"):
            checks = checks(vocab_size)
        for key, wanted in checks.items():
            value = layer["config"].get(key, _ABSENT)
            holds = wanted(value) if callable(wanted) else (value == wanted and type(value) is type(wanted))
            expected = "" if callable(wanted) else f", not {_shown_value(wanted)}"
            _require(holds, f"{layer['name']!r} has {key}={_shown_value(value)}{expected}")


def _layer_kinds(lstm_layers: int, dropout: bool) -> list[str]:
    kinds = ["InputLayer", "Reshape", "CategoryEncoding"]
    for _ in range(lstm_layers):
        kinds += ["LSTM", "Dropout"] if dropout else ["LSTM"]
    return kinds + ["Dense"]


_ABSENT = object()


def _absent_or(*allowed):
    return lambda value: value is _ABSENT or any(value is a or (value == a and type(value) is type(a))
                                                 for a in allowed)


def _rate(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1


# Per layer type: config key -> the value build_model writes (or a test of it).
_LAYER_CHECKS = {
    "InputLayer": {"batch_shape": [None, None], "dtype": "int32", "sparse": _absent_or(False),
                   "ragged": _absent_or(False), "optional": _absent_or(False)},
    "Reshape": {"target_shape": [-1, 1]},
    "CategoryEncoding": lambda vocab_size: {"num_tokens": vocab_size, "output_mode": "one_hot",
                                            "sparse": _absent_or(False)},
    "LSTM": lambda units, sequences: {
        "units": units, "activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True,
        "return_sequences": sequences, "return_state": False, "go_backwards": False, "stateful": False,
        "unroll": False, "dropout": _absent_or(0.0, 0), "recurrent_dropout": _absent_or(0.0, 0)},
    "Dropout": {"rate": _rate, "noise_shape": _absent_or(None)},
    "Dense": lambda vocab_size: {"units": vocab_size, "activation": "softmax", "use_bias": True,
                                 "lora_rank": _absent_or(None), "quantization_config": _absent_or(None)},
}


def _single_input(layer: dict):
    """The name of the one layer whose output `layer` reads, or None if it reads anything
    else (several inputs, several calls, extra tensors such as an LSTM's initial state)."""
    nodes = layer.get("inbound_nodes")
    if not (isinstance(nodes, list) and len(nodes) == 1 and isinstance(nodes[0], dict)):
        return None
    args, kwargs = nodes[0].get("args"), nodes[0].get("kwargs", {})
    if not (isinstance(args, list) and len(args) == 1 and isinstance(args[0], dict)
            and args[0].get("class_name") == "__keras_tensor__" and isinstance(args[0].get("config"), dict)):
        return None
    if not (isinstance(kwargs, dict) and set(kwargs) <= {"training", "mask"}
            and all(value is None or value is False for value in kwargs.values())):
        return None
    return _node_name(args[0]["config"].get("keras_history"))


def _node_name(reference):
    """"name" from a Keras node reference ["name", 0, 0] (or [["name", 0, 0]])."""
    if isinstance(reference, list) and len(reference) == 1 and isinstance(reference[0], list):
        reference = reference[0]
    if isinstance(reference, list) and len(reference) == 3 and reference[1:] == [0, 0] \
            and isinstance(reference[0], str):
        return reference[0]
    return None


def _shown(kinds: list) -> str:
    text = " > ".join(str(kind) for kind in kinds[:8])
    return text + (f" > ... ({len(kinds)} in all)" if len(kinds) > 8 else "")


def _shown_value(value) -> str:
    if value is _ABSENT:
        return "(missing)"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
