"""Shared pieces of the benchmarks: the book's recipe (Deep Learning with Python 8.1,
in Keras 3 spelling), the corpus, one held-out evaluator for every model, results.

Every benchmark compares the book and our `fast` preset in the same process run,
because the CPU is shared and absolute timings drift: the ratios are what count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
if str(ROOT) not in sys.path:  # `python bench/x.py` from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from engine.data import corpus as engine_corpus  # noqa: E402

# The corpus: --corpus, else $CHARLM_BENCH_CORPUS, else the engine's named corpus
# "nietzsche" (the corpora/ folder, the Keras cache, or a download).
DEFAULT_CORPUS = os.environ.get("CHARLM_BENCH_CORPUS") or engine_corpus.DEFAULT_CORPUS

BOOK_MAXLEN, BOOK_STEP, BOOK_BATCH, BOOK_LR = 60, 3, 128, 0.01

# The held-out evaluator, identical for every model: 60-char windows of the held-out
# tail every 10 chars, scoring positions 50..59 of each, so every held-out char is
# scored once, predicted from 50 to 59 chars of context (the book's models see 60).
EVAL_MAXLEN, EVAL_STEP, EVAL_CONTEXT = 60, 10, 50


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a smaller, faster run (smoke test)")
    p.add_argument("--corpus", default=DEFAULT_CORPUS, help=f"default: {DEFAULT_CORPUS}")
    p.add_argument("--out", default=None, help="result JSON path (default bench/results/NAME.json)")
    return p


def corpus_path(spec: str) -> str:
    """A file path for the book's `open(path).read()`."""
    if Path(spec).is_file():
        return spec
    return load_corpus(spec).source


def load_corpus(spec: str):
    # Lower-cased as the book's text is (book_text), so both sides learn the same characters.
    return engine_corpus.load_corpus(spec, lowercase=True,
                                     on_notice=lambda message: print("note:", message, file=sys.stderr))


def keras():
    from engine.tfsetup import keras as _keras

    return _keras()


# -- the book ---------------------------------------------------------------------------

def book_text(path: str) -> str:
    return open(path, encoding="utf-8").read().lower()


def book_vectorize(text: str, maxlen: int = BOOK_MAXLEN, step: int = BOOK_STEP, chars=None):
    """The book's vectorisation, verbatim but for `np.bool` -> `bool`. `chars`: the
    vocabulary, when `text` is only a slice of the corpus (default: the book's)."""
    sentences, next_chars = [], []
    for i in range(0, len(text) - maxlen, step):
        sentences.append(text[i:i + maxlen])
        next_chars.append(text[i + maxlen])
    chars = sorted(list(set(text))) if chars is None else list(chars)
    char_indices = dict((char, chars.index(char)) for char in chars)
    x = np.zeros((len(sentences), maxlen, len(chars)), dtype=bool)
    y = np.zeros((len(sentences), len(chars)), dtype=bool)
    for i, sentence in enumerate(sentences):
        for t, char in enumerate(sentence):
            x[i, t, char_indices[char]] = 1
        y[i, char_indices[next_chars[i]]] = 1
    return x, y, chars, char_indices


def book_model(nchars: int, maxlen: int = BOOK_MAXLEN):
    """Sequential LSTM(128) + Dense softmax, RMSprop(learning_rate=0.01), categorical CE."""
    k = keras()
    model = k.models.Sequential([
        k.Input(shape=(maxlen, nchars)),
        k.layers.LSTM(128),
        k.layers.Dense(nchars, activation="softmax"),
    ])
    model.compile(loss="categorical_crossentropy", optimizer=k.optimizers.RMSprop(learning_rate=BOOK_LR))
    return model


def book_sample(preds, temperature=1.0):
    """The book's `sample`, verbatim."""
    preds = np.asarray(preds).astype("float64")
    preds = np.log(preds) / temperature
    exp_preds = np.exp(preds)
    preds = exp_preds / np.sum(exp_preds)
    probas = np.random.multinomial(1, preds, 1)
    return np.argmax(probas)


class TimeBudget:
    """A Keras callback that stops `fit` after `seconds` of training (checked per batch)."""

    def __new__(cls, seconds: float):
        k = keras()

        class _Budget(k.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.seconds = seconds
                self.start = None
                self.batches = 0
                self.elapsed = 0.0

            def on_train_begin(self, logs=None):
                if self.start is None:
                    self.start = time.monotonic()

            def on_train_batch_end(self, batch, logs=None):
                self.batches += 1
                self.elapsed = time.monotonic() - self.start
                if self.elapsed >= self.seconds:
                    self.model.stop_training = True

        return _Budget()


# -- ours -------------------------------------------------------------------------------

def fast_config(**overrides):
    from engine.config import preset

    return preset("fast", **{"lowercase": True, **overrides})  # like the book's text


def split_ids(corpus, val_fraction: float = 0.1):
    from engine.data.windows import split_point

    split = split_point(len(corpus), val_fraction)
    return corpus.ids[:split], corpus.ids[split:]


def scoring_model(model, vocab_size: int):
    """Our model with the "all" objective holding `model`'s weights: the book's
    Sequential model and ours have the same weights (LSTM kernel, recurrent kernel,
    bias, Dense kernel, bias), so both are scored by the same function."""
    from engine.modeling.model import build_model

    lstms = [layer for layer in model.layers if type(layer).__name__ == "LSTM"]
    clone = build_model(vocab_size, fast_config(objective="all", layers=len(lstms), dropout=0.0,
                                                units=lstms[0].units))
    weights = [w for layer in model.layers for w in layer.get_weights()]
    clone.set_weights(weights)
    return clone


def evaluator(val_ids):
    from engine.data.windows import Windows

    return Windows(val_ids, EVAL_MAXLEN, EVAL_STEP, "all", batch_size=256, shuffle=False,
                   score_from=EVAL_CONTEXT)


def heldout(model, vocab_size: int, val_ids) -> float:
    """Held-out nats/char of `model` (book's or ours), by engine.modeling.model.heldout_loss."""
    from engine.modeling.model import heldout_loss

    return heldout_loss(scoring_model(model, vocab_size), evaluator(val_ids))


# -- results ----------------------------------------------------------------------------

def environment() -> dict:
    k = keras()  # imports TensorFlow quietly (engine.tfsetup)
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": k.__version__, "numpy": np.__version__, "cpus": os.cpu_count(),
            "machine": platform.machine(), "loadavg_start": list(os.getloadavg())}


def save(name: str, result: dict, out: str | None = None) -> Path:
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    command = [".venv/bin/python", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]
    result = {"benchmark": name, "command": " ".join(command),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **result}
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresult: {os.path.relpath(path, Path.cwd())}")
    return path


def table(rows: list[list], headers: list[str]) -> str:
    cells = [[str(c) for c in row] for row in [headers] + rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
