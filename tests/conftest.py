"""Shared fixtures: a tiny corpus, a tiny model config and a tiny run trained through the
command line, so the real engine runs fast."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from tests.runs import TINY, charlm

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The tests run their commands as a terminal starts them: SIGHUP at its default. A suite
# started under `nohup` would otherwise pass SIGHUP ignored on to every command it runs
# (that survives exec), and the hangup tests would test nohup instead; the tests of
# nohup's behaviour ignore it themselves (tests/terminal.py).
signal.signal(signal.SIGHUP, signal.SIG_DFL)

if os.environ.get("CHARLM_TESTS_WITHOUT_TENSORFLOW"):
    # `make test-fast`: the tests it selects (not marked `trains` or `slow`) must not need
    # TensorFlow; one that imports it fails here, saying so, rather than making the fast
    # suite slow. (Commands a test runs in a subprocess are not covered: mark those.)
    class _NoTensorFlow:
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith(("tensorflow.", "keras")):
                raise ImportError(f"{name} imported by a test that `make test-fast` runs: "
                                  "mark the test `trains` (or make it not need TensorFlow)")
            return None

    import sys

    sys.meta_path.insert(0, _NoTensorFlow())

SHARED = Path(__file__).resolve().parents[2] / "shared"
NIETZSCHE = SHARED / "corpora" / "nietzsche.txt"

WORDS = ("the will to power is the will of life itself and every philosopher knows "
         "that truth is a woman who does not wish to be won by clumsy men").split()


def tiny_text(chars: int = 6000, seed: int = 0) -> str:
    """Pseudo-English with real structure (words, spaces, sentences) to learn from."""
    rng = np.random.default_rng(seed)
    out, length = [], 0
    while length < chars:
        sentence = " ".join(rng.choice(WORDS, size=rng.integers(4, 10))).capitalize() + ".\n"
        out.append(sentence)
        length += len(sentence)
    return "".join(out)[:chars]


@pytest.fixture(autouse=True)
def private_cache_home(monkeypatch, tmp_path):
    """Every test its own cache folder ($XDG_CACHE_HOME, inherited by the commands it
    runs): the app writes the recent corpora there (charlm-tui/recent.json) and rescued
    runs, pydocs is built there; a test must neither touch the user's nor see another's."""
    cache_home = tmp_path / "cache-home"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    return cache_home


@pytest.fixture
def tiny_corpus_path(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(tiny_text(), encoding="utf-8")
    return path


@pytest.fixture
def tiny_corpus(tiny_corpus_path):
    from engine.data.corpus import load_corpus

    return load_corpus(tiny_corpus_path, lowercase=True)


def tiny_config(**overrides):
    from engine.config import preset

    settings = dict(units=8, maxlen=16, step=8, batch_size=16, epochs=1, log_every=2, patience=0,
                    sample_length=20, checkpoint_every=3600.0)
    settings.update(overrides)
    return preset(settings.pop("preset", "fast"), **settings)


# -- a run trained through the command line, damaged on copies (test_reliability, test_hostile);
# a module that needs another run defines its own base_run and run_copy, which take precedence.
@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text(tiny_text(), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, corpus_file) -> Path:
    """A run trained for 3 steps through the CLI, checkpointing after every batch:
    model.keras holds step 3 and model.prev.keras step 2. Tests work on copies."""
    run = tmp_path_factory.mktemp("base") / "run"
    out = charlm("train", "--corpus", corpus_file, "--run", run, *TINY, "--steps", "3", "--length", "0",
                 "--checkpoint-every", "0")
    assert out.returncode == 0, out.stderr
    return run


@pytest.fixture
def run_copy(base_run, tmp_path) -> Path:
    """A copy of the run without its best checkpoint: what these tests damage is the newest,
    model.keras, which a stopped run is read from only when it kept no best."""
    copy = tmp_path / "run"
    shutil.copytree(base_run, copy, ignore=shutil.ignore_patterns(".lock", "model.best.*"))
    return copy
