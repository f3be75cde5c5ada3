"""The run session and the follower without TensorFlow: settings, stopping before any
training, signals, and a followed run's rows becoming the events a live run reports."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

from engine import events
from engine.files.rundir import RunDir
from engine.progress import Progress, replay
from engine.run.follow import RunFollower
from engine.run.session import RunRequest, RunSession
from tests.conftest import tiny_config


def _write_run(path, corpus) -> RunDir:
    """A run directory as the trainer starts it (config and vocabulary, no model yet)."""
    run = RunDir(path)
    run.create()
    run.write_config(tiny_config(epochs=2), {"name": corpus.name, "source": corpus.source,
                                              "chars": len(corpus), "vocab_size": len(corpus.vocab)})
    run.write_vocab(corpus.vocab)
    return run


def test_a_resumed_run_keeps_its_settings_unless_told_otherwise(tiny_corpus, tmp_path):
    _write_run(tmp_path / "run", tiny_corpus)
    kept = RunRequest(corpus=tiny_corpus, run_dir=tmp_path / "run").settings(tmp_path / "run")
    assert (kept.units, kept.epochs) == (8, 2)
    changed = RunRequest(corpus=tiny_corpus, overrides={"epochs": 5}).settings(tmp_path / "run")
    assert (changed.units, changed.epochs) == (8, 5)
    fresh = RunRequest(corpus=tiny_corpus, fresh=True).settings(tmp_path / "run")
    assert fresh.units == 128


def test_a_stop_before_training_ends_the_session_before_anything_is_written(tiny_corpus_path, tmp_path):
    seen = []
    session = RunSession(RunRequest(corpus=str(tiny_corpus_path), run_dir=tmp_path / "run",
                                    overrides={"units": 8}), on_event=seen.append)
    session.stop()
    assert session.run() is None and session.done.is_set()
    kinds = [type(e) for e in seen]
    assert kinds[0] is events.StateChanged and seen[0].state == "stopping"
    assert events.CorpusReady in kinds and events.TrainingStarted not in kinds
    assert not any(isinstance(e, events.Preparing) and "TensorFlow" in e.text for e in seen)
    assert not (tmp_path / "run").exists(), "nothing is written before training starts"


def test_a_signal_stops_the_session_and_sets_the_exit_code(tiny_corpus_path, tmp_path):
    session = RunSession(RunRequest(corpus=str(tiny_corpus_path), run_dir=tmp_path / "run"))
    heard = []
    with session.stopping_on_signals(heard.append):
        os.kill(os.getpid(), signal.SIGHUP)
        deadline = time.monotonic() + 5
        while not heard and time.monotonic() < deadline:
            time.sleep(0.01)
    assert heard == [signal.SIGHUP] and session.stopping and session.exit_code == 129
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL, "the previous handler is back"


def test_a_followed_run_reports_the_events_of_its_metrics_and_its_end(tiny_corpus, tmp_path):
    run = _write_run(tmp_path / "run", tiny_corpus)
    batches: list = []
    arrived = threading.Condition()

    def on_events(batch):
        with arrived:
            batches.append(batch)
            arrived.notify_all()

    def wait_for(kind):
        with arrived:
            assert arrived.wait_for(lambda: any(isinstance(e, kind) for b in batches for e in b),
                                    timeout=10), kind

    follower = RunFollower(run.path, on_events, poll_interval=0.05)
    follower.start()
    try:
        wait_for(events.CorpusReady)
        run.append_metrics({"kind": "start", "epoch": 1, "step": 0, "wall": 0.0, "chars": 0,
                            "train_loss": None, "val_loss": None, "steps_per_epoch": 10, "epochs": 2,
                            "step_budget": 15})
        for step in (5, 10):
            run.append_metrics({"kind": "interval", "epoch": 1, "step": step, "wall": step / 10,
                                "chars": step * 256, "train_loss": 3.0 - step / 10, "val_loss": None})
        run.append_metrics({"kind": "epoch", "epoch": 1, "step": 10, "wall": 1.2, "chars": 2560,
                            "train_loss": 2.5, "val_loss": 2.6})
        wait_for(events.EpochEnd)
        running = replay([e for b in batches for e in b])
        assert running.state == "running" and (running.epoch, running.batch) == (1, 10)
        assert running.eta is not None and running.chars_per_sec > 0, "the rate comes from the rows"
        run.append_metrics({"kind": "end", "epoch": 1, "step": 15, "wall": 1.8, "chars": 3840,
                            "train_loss": 2.4, "val_loss": 2.6, "reason": "steps", "chars_per_sec": 2000.0})
        wait_for(events.TrainingFinished)
    finally:
        follower.stop()
        assert follower.wait(5)
    finished = replay([e for b in batches for e in b], Progress())
    assert finished.state == "finished" and finished.finish_reason == "steps" and finished.eta == 0.0
    assert (finished.epoch, finished.batch, finished.step) == (2, 5, 15)
    assert sorted(p.name for p in run.path.iterdir()) == ["config.json", "metrics.jsonl", "vocab.json"]


def test_the_app_options_refuse_nothing_the_headless_parser_accepts():
    from tui import options

    args = options.train_parser().parse_args(["--units", "8", "--length", "0", "--keep-case"])
    request = options.run_request(args)
    request.check()
    assert request.overrides == {"units": 8, "lowercase": False, "sample_length": 0}
    assert json.loads(json.dumps(request.overrides)) == request.overrides


def test_the_schedule_is_an_option_a_resumed_run_keeps_unless_told(tiny_corpus, tmp_path):
    from tui import options

    _write_run(tmp_path / "run", tiny_corpus)  # tiny_config: the fast preset's cosine
    args = options.train_parser().parse_args(["--schedule", "constant"])
    request = options.run_request(args)
    assert request.overrides == {"schedule": "constant"}
    settings = RunRequest(corpus=tiny_corpus, overrides=request.overrides).settings(tmp_path / "run")
    assert settings.schedule == "constant"
    assert RunRequest(corpus=tiny_corpus).settings(tmp_path / "run").schedule == "cosine"
