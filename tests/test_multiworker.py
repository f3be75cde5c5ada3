"""--strategy multiworker: two real worker processes on loopback ports, as on two machines.

Each worker gets its own TF_CONFIG, its own --run directory and its own $TMPDIR, so the
tests can see that only the chief writes and that the others leave nothing behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import TrainingError
from engine.files.rundir import RunDir
from engine.scale.distribute import cluster_size, is_chief, worker_label
from tests.conftest import tiny_text

TINY = ["--units", "8", "--maxlen", "16", "--step", "8", "--batch-size", "16", "--length", "20", "--json"]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"localhost:{port}" for port in ports]},
                       "task": {"type": "worker", "index": index}})


class Cluster:
    """Two `charlm-tui train --strategy multiworker` processes, worker 0 being the chief."""

    def __init__(self, root: Path, corpus: Path, *args, corpora: tuple[Path, Path] | None = None):
        ports = free_ports(2)
        self.runs = [root / "run0", root / "run1"]
        self.processes = []
        for index in range(2):
            scratch = root / f"tmp{index}"
            scratch.mkdir(exist_ok=True)
            env = {**os.environ, "TF_CONFIG": tf_config(ports, index), "TMPDIR": str(scratch),
                   "PYTHONUNBUFFERED": "1"}
            command = [sys.executable, "-m", "tui.cli", "train", "--strategy", "multiworker",
                       "--corpus", str(corpora[index] if corpora else corpus),
                       "--run", str(self.runs[index]), *TINY, *map(str, args)]
            self.processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                   text=True, env=env))

    def wait(self, timeout: float = 240) -> list[tuple[int, str, str]]:
        results = []
        for process in self.processes:
            out, err = process.communicate(timeout=timeout)
            results.append((process.returncode, out, err))
        return results

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()


@pytest.fixture
def cluster(tmp_path, tiny_corpus_path):
    started = []

    def start(*args, **kwargs) -> Cluster:
        started.append(Cluster(tmp_path, tiny_corpus_path, *args, **kwargs))
        return started[-1]

    yield start
    for c in started:
        c.kill()


def summary(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def saved_step(run: Path) -> int:
    import keras

    return int(keras.saving.load_model(run / "model.keras", safe_mode=True).optimizer.iterations.numpy())


def wait_for_metrics(run: Path, processes, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not (run / "metrics.jsonl").exists() or not (run / "metrics.jsonl").read_text().strip():
        assert all(p.poll() is None for p in processes), "a worker ended before training"
        assert time.monotonic() < deadline, "no training progress"
        time.sleep(0.2)


@pytest.mark.trains
def test_two_workers_compute_what_one_process_computes_and_only_the_chief_writes(
        cluster, tiny_corpus_path, tmp_path):
    run = cluster("--steps", "20", "--tensorboard")
    (chief_code, chief_out, chief_err), (worker_code, worker_out, worker_err) = run.wait()
    assert chief_code == 0, chief_err
    assert worker_code == 0, worker_err
    chief, worker = summary(chief_out), summary(worker_out)

    # The global batch of 16 is split 8 + 8 and the gradients are averaged: the same
    # training, step for step, as one process with the whole batch.
    single = subprocess.run([sys.executable, "-m", "tui.cli", "train", "--corpus", str(tiny_corpus_path),
                             "--run", str(tmp_path / "single"), *TINY, "--steps", "20"],
                            capture_output=True, text=True, timeout=240)
    assert single.returncode == 0, single.stderr
    alone = summary(single.stdout)
    assert chief["step"] == worker["step"] == alone["step"] == 20
    assert chief["train_loss"] == pytest.approx(alone["train_loss"], abs=1e-4)
    assert worker["train_loss"] == chief["train_loss"]  # the loss is all-reduced
    assert chief["val_loss"] == pytest.approx(alone["val_loss"], abs=1e-4)

    # The chief keeps the run; the other worker writes nowhere and cleans up its scratch.
    assert saved_step(tmp_path / "run0") == 20
    assert any((tmp_path / "run0" / "tensorboard" / "train").glob("events.out.tfevents.*"))
    assert "chief, one of 2 workers" in chief_out
    assert "as worker 1, one of 2 workers" in worker_out and worker["val_loss"] is None
    assert not (tmp_path / "run1").exists()
    assert list((tmp_path / "tmp1").iterdir()) == []


@pytest.mark.trains
def test_a_stop_on_any_worker_stops_all_after_the_same_step_and_the_run_resumes(cluster, tmp_path):
    run = cluster("--epochs", "1000")
    wait_for_metrics(tmp_path / "run0", run.processes)
    run.processes[1].send_signal(signal.SIGTERM)  # the worker, not the chief
    (chief_code, chief_out, chief_err), (worker_code, worker_out, _) = run.wait()
    assert (chief_code, worker_code) == (0, 143), chief_err
    chief, worker = summary(chief_out), summary(worker_out)
    assert chief["reason"] == worker["reason"] == "stopped"
    assert chief["step"] == worker["step"] > 0
    stopped_at = chief["step"]
    assert saved_step(tmp_path / "run0") == stopped_at  # saved by the chief on its way out

    # Both start again: the chief from its checkpoint (and the run's settings: --epochs
    # 1000), the worker from the chief's state and settings (its own would say 60 epochs).
    (chief_code, chief_out, chief_err), (worker_code, worker_out, worker_err) = cluster("--steps", "4").wait()
    assert chief_code == 0 and worker_code == 0, chief_err + worker_err
    assert f"resuming at step {stopped_at:,}" in chief_out
    assert f"as worker 1, one of 2 workers (resuming at step {stopped_at:,})" in worker_out
    assert summary(chief_out)["step"] == summary(worker_out)["step"] == stopped_at + 4
    assert saved_step(tmp_path / "run0") == stopped_at + 4


@pytest.mark.trains
def test_a_lost_worker_ends_the_run_with_a_checkpoint_and_a_clear_message(cluster, tmp_path):
    run = cluster("--epochs", "1000")
    wait_for_metrics(tmp_path / "run0", run.processes)
    run.processes[1].kill()
    chief_code, chief_out, chief_err = run.wait()[0]
    assert chief_code == 1
    assert "lost contact with worker 1" in chief_err and "Traceback" not in chief_err
    assert "checkpoint saved" in chief_out
    assert saved_step(tmp_path / "run0") > 0


@pytest.mark.trains
def test_workers_given_different_corpora_refuse_together(cluster, tmp_path, tiny_corpus_path):
    other = tmp_path / "other.txt"
    other.write_text(tiny_text(seed=1), encoding="utf-8")
    results = cluster("--steps", "2", corpora=(tiny_corpus_path, other)).wait()
    for code, _, err in results:
        assert code == 1
        assert "a different corpus from the chief's" in err and "Traceback" not in err
    assert not (tmp_path / "run0" / "model.keras").exists()


# -- without processes: TF_CONFIG, the CLI and the app ---------------------------------------
def test_tf_config_decides_the_chief(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:1"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert is_chief() and cluster_size() == 2 and worker_label() == "chief, one of 2 workers"
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert not is_chief() and cluster_size() == 3 and worker_label() == "worker 0, one of 3 workers"
    for bad in ("", "{", '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}'):
        monkeypatch.setenv("TF_CONFIG", bad)
        with pytest.raises(TrainingError, match="TF_CONFIG"):
            is_chief()


@pytest.mark.trains
def test_multiworker_without_tf_config_is_refused_before_any_work(tiny_corpus_path, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    out = subprocess.run([sys.executable, "-m", "tui.cli", "train", "--corpus", str(tiny_corpus_path),
                          "--run", str(tmp_path / "run"), "--strategy", "multiworker"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 1
    assert "needs TF_CONFIG" in out.stderr and "Traceback" not in out.stderr


def test_the_app_sends_multiworker_training_to_the_headless_command(capsys):
    from tui.cli import main

    assert main(["--strategy", "multiworker"]) == 2
    assert "charlm-tui train --strategy multiworker" in capsys.readouterr().err


def test_a_resumed_run_does_not_inherit_the_strategy(tmp_path):
    from engine.config import preset
    from tui.options import run_request, train_parser

    run = RunDir(tmp_path / "run")
    run.create()
    run.write_config(preset("fast", strategy="multiworker", units=8), {})
    config = run_request(train_parser().parse_args(["--run", str(run.path)])).settings(run.path)
    assert config.strategy == "default" and config.units == 8
