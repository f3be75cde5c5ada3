"""Helpers for tests that run `charlm-tui` as a user does: a real process, its exit code
and its one line on stderr, and a few ways to damage a run directory.

Shared by the command-line test modules, which never import each other; the fixtures
built on these (a run trained through the command line, copies of it) are in
tests/conftest.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--units", "8", "--maxlen", "16", "--step", "8", "--batch-size", "16", "--patience", "0"]
QUIET = {"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
ENV = {**os.environ, **QUIET}  # for a process started by hand; charlm() reads the environment afresh


def charlm(*args, timeout=300, cwd=ROOT, **kwargs) -> subprocess.CompletedProcess:
    """Run `charlm-tui ARGS` to the end. Its environment is the test's at the time of the
    call, so what a test or fixture sets (conftest's private $XDG_CACHE_HOME) reaches it."""
    return subprocess.run([sys.executable, "-m", "tui.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **QUIET}, cwd=cwd, **kwargs)


def assert_one_line_refusal(out: subprocess.CompletedProcess, *expected: str) -> None:
    assert out.returncode != 0, out.stdout[-2000:]
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charlm-tui: error: "), out.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def saved_step(path: Path) -> int:
    from engine.tfsetup import keras

    return int(keras().saving.load_model(path, safe_mode=True).optimizer.iterations.numpy())


def poison(model_path: Path) -> None:
    """Make the saved model's output bias NaN, so its next training step's loss is NaN."""
    from engine.tfsetup import keras

    model = keras().saving.load_model(model_path, safe_mode=True)
    weights = model.get_weights()
    weights[-1][:] = np.nan
    model.set_weights(weights)
    model.save(model_path)


def lambda_model(marker: Path):
    """A model with a Lambda layer that touches `marker` when it runs: what a hostile run
    directory could hold in place of model.keras."""
    from engine.tfsetup import keras

    layers = keras().layers
    inputs = keras().Input(shape=(None,), dtype="int32")
    # The path is a constant of the lambda's own bytecode (Keras drops closures and defaults).
    function = eval(f"lambda t: (__import__('pathlib').Path({str(marker)!r}).touch(), t)[1]")
    x = layers.Lambda(function)(inputs)
    x = layers.CategoryEncoding(num_tokens=24, output_mode="one_hot")(layers.Reshape((-1, 1))(x))
    outputs = layers.Dense(24, activation="softmax")(layers.LSTM(8, return_sequences=True)(x))
    model = keras().Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model
