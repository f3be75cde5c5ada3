"""Helpers and fixtures for the app's tests: a tiny corpus, a tiny config, a saved run
directory with fixed weights (for deterministic snapshots), and ways to wait for the
real engine without sleeping longer than needed (tests/waiting.py).

Import into a test module with `from tests.app_fixtures import *`.
"""

from __future__ import annotations

import contextlib
import html
import re
from pathlib import Path

import numpy as np
import pytest

from engine.files import checkpoints
from tests.conftest import tiny_text
from tests.waiting import wait_for_app

__all__ = ["tiny_train_config", "app_options", "wait_until", "notified", "running_app", "saved_run",
           "sample_workspace", "same_device_everywhere", "SNAPSHOT_SAMPLE_LENGTH"]

SNAPSHOT_SAMPLE_LENGTH = 150


def tiny_train_config(**overrides):
    """A model that trains in milliseconds per step; many epochs so a run lasts until
    the test stops it (every test ends with q or a stop)."""
    from engine.config import preset

    settings = dict(units=8, maxlen=16, step=8, batch_size=16, epochs=1000, log_every=1,
                    sample_length=40, checkpoint_every=3600.0)
    settings.update(overrides)
    return preset("fast", **settings)


def app_options(corpus: Path | str, run_dir: Path | str, **overrides):
    """The app's options, as the CLI makes them: training `corpus` in `run_dir` with a tiny
    config, or (no_train=True) sampling from the saved run in `run_dir`."""
    import dataclasses

    from engine.run.session import RunRequest
    from tui.options import AppOptions

    config = overrides.pop("config", None) or tiny_train_config()
    seed = overrides.pop("seed", 7)
    if overrides.pop("no_train", False):
        return AppOptions(corpus=str(corpus), run_dir=str(run_dir), mode="saved", seed=seed,
                          sample_length=config.sample_length, **overrides)
    settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "preset"}
    request = RunRequest(corpus=str(corpus), run_dir=str(run_dir), preset=config.preset, overrides=settings,
                         fresh=overrides.pop("fresh", False))
    return AppOptions(corpus=str(corpus), run_dir=str(run_dir), request=request, seed=seed, **overrides)


async def wait_until(pilot, predicate, timeout: float = 120.0, what: str = "condition") -> None:
    """Let the app run until predicate() is true (tests/waiting.py), saying on a timeout
    where the app stood."""
    def state() -> str:
        app = pilot.app
        return (f"phase={getattr(app, 'phase', '?')} screen={app.screen!r} header={app.header.info} "
                f"notifications={[n.message for n in app.notices]}")

    await wait_for_app(pilot, predicate, timeout, what, state)


def screen_rows(app) -> list[str]:
    """The screen as rows of text, read from the app's own SVG screenshot."""
    svg = app.export_screenshot()
    rows: dict[int, list[tuple[float, str]]] = {}
    for match in re.finditer(r'<text class="[^"]*" x="([\d.]+)" y="[\d.]+" textLength="[\d.]+" '
                             r'clip-path="url\(#[\w-]*?line-(\d+)\)">([^<]*)</text>', svg):
        text = html.unescape(match.group(3)).replace("\xa0", " ")
        rows.setdefault(int(match.group(2)), []).append((float(match.group(1)), text))
    width = max(x for row in rows.values() for x, _ in row) or 1.0
    lines = []
    for index in range(max(rows) + 1):
        cells: dict[int, str] = {}
        for x, text in rows.get(index, []):
            start = round(x / 12.2)  # Textual's SVG: 12.2 units a cell
            for offset, char in enumerate(text):
                cells[start + offset] = char
        lines.append("".join(cells.get(i, " ") for i in range(max(cells, default=-1) + 1)))
    assert width  # (rows were found)
    return lines


def notified(app, text: str, severity: str | None = None) -> bool:
    """Whether a notification containing `text` (of `severity`) has been shown."""
    return any(text in n.message and (severity is None or n.severity == severity)
               for n in app.notices)


@contextlib.asynccontextmanager
async def running_app(app, size=(120, 40)):
    """`app.run_test`, making sure the training thread is stopped even if the test fails
    (a trainer left running would slow every later test)."""
    try:
        async with app.run_test(size=size) as pilot:
            yield pilot
    finally:
        app.stop_threads(timeout=60)


def _write_saved_run(run_dir: Path, corpus_path: Path) -> None:
    """A run directory as the trainer leaves it, but with weights drawn from a seeded
    RNG and fixed metrics: what the app shows from it never varies."""
    from engine.config import preset
    from engine.data.corpus import corpus_notes, load_corpus
    from engine.files.rundir import RunDir
    from engine.modeling.model import build_model

    corpus = load_corpus(corpus_path, lowercase=True)
    # (its own learning rate, as a run saved by an earlier version keeps: the header shows it)
    config = preset("fast", units=16, maxlen=32, step=8, batch_size=16, epochs=3, lr=0.008,
                    log_every=10, sample_length=SNAPSHOT_SAMPLE_LENGTH, lowercase=corpus.lowercase)
    run = RunDir(run_dir)
    run.create()
    run.write_config(config, {"name": corpus.name, "source": str(corpus_path), **corpus_notes(corpus),
                              "chars": len(corpus), "vocab_size": len(corpus.vocab)})
    run.write_vocab(corpus.vocab)
    model = build_model(len(corpus.vocab), config)
    rng = np.random.default_rng(1234)
    weights = [rng.normal(0.0, 0.3, size=w.shape).astype(w.dtype) for w in model.get_weights()]
    # The output bias at the corpus's log letter frequencies: text that looks like letter
    # soup with spaces, not one letter repeated.
    counts = np.bincount(corpus.ids, minlength=len(corpus.vocab)) + 1.0
    weights[-1] = np.log(counts / counts.sum()).astype(weights[-1].dtype)
    model.set_weights(weights)
    checkpoints.save_model(run, model)
    losses = [3.2, 2.9, 2.5, 2.2, 2.0, 1.9, 1.8, 1.7, 1.65, 1.6]
    run.append_metrics({"kind": "start", "epoch": 1, "step": 0, "wall": 0.0, "chars": 0, "train_loss": None,
                        "val_loss": None, "steps_per_epoch": 40, "epochs": 3})
    for i, loss in enumerate(losses):
        run.append_metrics({"kind": "interval", "epoch": 1 + i // 4, "step": 10 * (i + 1),
                            "wall": float(i), "chars": 0, "train_loss": loss, "val_loss": None})
        if i % 4 == 3:
            run.append_metrics({"kind": "epoch", "epoch": 1 + i // 4, "step": 10 * (i + 1),
                                "wall": float(i), "chars": 0, "train_loss": loss,
                                "val_loss": loss + 0.1})


@pytest.fixture(scope="session")
def saved_run(tmp_path_factory):
    """(workspace, corpus path, run dir) of a saved run, made once per session."""
    workspace = tmp_path_factory.mktemp("saved-run")
    corpus_path = workspace / "corpora" / "tiny.txt"
    corpus_path.parent.mkdir()
    corpus_path.write_text(tiny_text(6000, seed=3), encoding="utf-8")
    (workspace / "corpora" / "other.txt").write_text(tiny_text(3000, seed=4), encoding="utf-8")
    run_dir = workspace / "runs" / "tiny"
    _write_saved_run(run_dir, corpus_path)
    return workspace, corpus_path, run_dir


@pytest.fixture
def sample_workspace(saved_run, monkeypatch):
    """Work inside the saved run's workspace, with nothing from this machine's caches
    (no downloaded Nietzsche, no built pydocs, no recent corpora: XDG_CACHE_HOME is the
    test's own, see tests/conftest.py private_cache_home) so the picker lists the same every time."""
    workspace, corpus_path, run_dir = saved_run
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("CHARLM_CORPORA", str(workspace / "corpora"))
    monkeypatch.setenv("KERAS_HOME", str(workspace / ".keras-home"))
    return workspace, corpus_path, run_dir


@pytest.fixture
def same_device_everywhere(monkeypatch):
    """The header names the device: the screens must not change on a GPU box."""
    import engine.tfsetup

    monkeypatch.setattr(engine.tfsetup, "device_name", lambda: "CPU")


def saved_app():
    """The app in sampling-only mode on the saved run of `sample_workspace`, a fixed seed."""
    from tui.app import build_app

    config = tiny_train_config(sample_length=SNAPSHOT_SAMPLE_LENGTH)
    return build_app(app_options("tiny", "runs/tiny", no_train=True, config=config, seed=11))


async def settled(pilot) -> None:
    """The run open and its settings in the header, its round streamed to the end, the loss
    plot drawn, every worker done (a snapshot of the saved app under load once lacked the
    header's second line: preset, device, run)."""
    from tui.widgets.training import LossPlot

    app = pilot.app
    await wait_until(pilot, lambda: app.main is not None and app.main.is_mounted, 60, "the screen")
    await wait_until(pilot, lambda: app.header.info.preset, 60, "the run's settings in the header")
    await wait_until(pilot, lambda: app.generation_pane.round is not None and app.generation_pane.round.done
                     and app.training_pane.drawn and app.training_pane.query_one(LossPlot).train.xs,
                     60, "the round to finish and the plot to be drawn")
    await app.workers.wait_for_complete()
    await pilot.pause(0.1)
