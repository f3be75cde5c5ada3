"""The run directory is the user's disk (issue 12, the writing side).

Training starts only in a new or empty directory or in a charlm-tui run, removes only
the names it writes, never writes through a symbolic link, survives its directory being
deleted, applies a changed learning rate on resume, and does not count time the process
was stopped. Through the real `charlm-tui` process wherever a user would meet it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import RunDirError
from engine.files import checkpoints
from engine.files.rundir import RunDir
from engine.files.safeio import atomic_write_bytes, write_new_file
from tests.conftest import tiny_config, tiny_text
from tests.runs import ENV, ROOT, TINY, assert_one_line_refusal, charlm, saved_step

STOPPED_SECONDS = 10  # SIGSTOP to SIGCONT in the clock tests
BUDGET_SECONDS = 8     # the first epoch (tracing included) takes ~5 s here


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, corpus_file) -> Path:
    """A run trained for 2 steps through the CLI (lr 0.02, the fast preset's)."""
    run = tmp_path_factory.mktemp("base") / "run"
    out = charlm("train", "--corpus", corpus_file, "--run", run, *TINY, "--steps", "2", "--length", "0")
    assert out.returncode == 0, out.stderr
    return run


@pytest.fixture
def run_copy(base_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(base_run, copy, ignore=shutil.ignore_patterns(".lock"))
    return copy


def everything(folder: Path) -> dict[str, bytes | str]:
    """Every entry under `folder` (links as their targets, not followed) and its content."""
    found = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_symlink():
            found[name] = f"-> {os.readlink(path)}"
        elif path.is_file():
            found[name] = path.read_bytes()
        else:
            found[name] = "folder"
    return found


def wait_for_training(process: subprocess.Popen, run: Path, timeout: float = 180, *,
                      past_start: bool = False) -> float:
    """Until metrics.jsonl has a row (training is under way; `past_start`: a row of steps
    trained, so the first step's tracing is over); the seconds of training it says."""
    deadline = time.monotonic() + timeout
    metrics = run / "metrics.jsonl"
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if metrics.exists() and metrics.read_bytes().endswith(b"\n"):
            row = json.loads(metrics.read_text().splitlines()[-1])
            if not past_start or row["kind"] != "start":
                return row["wall"]
        time.sleep(0.05)
    process.kill()
    pytest.fail("training did not start")


def start_training(corpus: Path, run: Path, *args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tui.cli", "train", "--corpus", str(corpus),
                             "--run", str(run), *TINY, "--length", "0", "--json", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or ENV, cwd=ROOT)


def summary(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------
# 1. A new run only in a new or empty directory, or in a charlm-tui run


def _the_issues_folder(root: Path) -> None:
    (root / "samples").mkdir()
    (root / "samples" / "part1.txt").write_text("my novel, part one\n")
    (root / "samples" / "notes.txt").write_text("notes\n")
    (root / "state.json").write_text('{"mine": true}\n')
    (root / "metrics.jsonl").write_text('{"my": "data"}\n')


def _a_foreign_config(root: Path) -> None:
    (root / "config.json").write_text('{"editor.fontSize": 14}\n')


def _one_document(root: Path) -> None:
    (root / "thesis.tex").write_text("\\documentclass{article}\n")


@pytest.mark.parametrize("fresh", [False, True])
@pytest.mark.parametrize("make, expected", [
    (_the_issues_folder, "not a charlm-tui run"),
    (_a_foreign_config, "its config.json is not one charlm-tui wrote"),
    (_one_document, "'thesis.tex'"),
])
def test_a_directory_that_is_not_a_run_is_refused_and_left_exactly_as_it_was(make, expected, fresh,
                                                                              corpus_file, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    make(folder)
    before = everything(folder)
    out = charlm("train", "--corpus", corpus_file, "--run", folder, *TINY, "--steps", "3",
                 *(["--fresh"] if fresh else []))
    assert_one_line_refusal(out, str(folder), expected, "choose a new or empty directory for --run")
    assert everything(folder) == before  # not even a .lock


def test_the_app_refuses_it_before_opening_its_log_there(corpus_file, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    _the_issues_folder(folder)
    before = everything(folder)
    out = charlm("--corpus", corpus_file, "--run", folder, *TINY, timeout=120)
    assert_one_line_refusal(out, str(folder), "not a charlm-tui run")
    assert everything(folder) == before


@pytest.mark.trains
def test_new_empty_interrupted_and_existing_runs_are_accepted(run_copy, tmp_path):
    interrupted = tmp_path / "interrupted"  # killed after the lock and vocab.json, before config.json
    interrupted.mkdir()
    (interrupted / ".lock").write_text("")
    (interrupted / "vocab.json").write_text("{}")
    (interrupted / f".vocab.json.tmp-{os.getpid() + 1}").write_text("")
    (tmp_path / "empty").mkdir()
    (run_copy / "my notes.txt").write_text("a run may hold the user's files too")
    for folder in (tmp_path / "new", tmp_path / "empty", interrupted, run_copy):
        RunDir(folder).check_can_train()


@pytest.mark.parametrize("fresh", [False, True])
def test_a_corpus_inside_the_run_directory_is_refused_and_kept(fresh, run_copy):
    (run_copy / "samples").mkdir(exist_ok=True)
    corpus = run_copy / "samples"
    (corpus / "book.txt").write_text(tiny_text(seed=3), encoding="utf-8")
    before = everything(run_copy)
    out = charlm("train", "--corpus", corpus, "--run", run_copy, *TINY, "--steps", "1", "--length", "0",
                 *(["--fresh"] if fresh else []))
    assert_one_line_refusal(out, "lies inside the run directory", "move it out or choose another --run")
    assert everything(run_copy) == before


# ---------------------------------------------------------------------------------------
# 2. --fresh (and the app's retrain) remove only what the project wrote


def test_fresh_refuses_a_samples_link_and_never_deletes_what_it_points_to(run_copy, corpus_file, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "epoch-0001.txt").write_text("mine, whatever its name\n")
    (elsewhere / "chapter.txt").write_text("mine\n")
    shutil.rmtree(run_copy / "samples", ignore_errors=True)
    (run_copy / "samples").symlink_to(elsewhere, target_is_directory=True)
    before = everything(elsewhere)
    out = charlm("train", "--corpus", corpus_file, "--run", run_copy, "--fresh", *TINY, "--steps", "1")
    assert_one_line_refusal(out, "samples is a symbolic link", "remove the link or choose another --run")
    RunDir(run_copy).clear_history()  # the engine call behind --fresh and the app's retrain, on its own
    assert everything(elsewhere) == before
    assert (run_copy / "samples").is_symlink()


def test_clear_history_removes_only_the_projects_own_names(run_copy):
    samples = run_copy / "samples"
    samples.mkdir(exist_ok=True)
    ours = [samples / "epoch-0001.txt", samples / "epoch-0012.txt",
            samples / f".epoch-0002.txt.tmp-{os.getpid()}"]
    theirs = [samples / "notes.txt", samples / "epoch-1.txt", samples / "epoch-0003.txt.bak",
              run_copy / "metrics.jsonl.old", run_copy / "state.json.txt"]
    for path in ours + theirs:
        path.write_text("x")
    (samples / "drafts").mkdir()
    (samples / "drafts" / "epoch-0004.txt").write_text("in a subfolder")
    RunDir(run_copy).clear_history()
    assert not any(path.exists() for path in ours)
    assert not (run_copy / "metrics.jsonl").exists() and not (run_copy / "state.json").exists()
    assert all(path.read_text() == "x" for path in theirs)
    assert (samples / "drafts" / "epoch-0004.txt").read_text() == "in a subfolder"
    assert (run_copy / "model.keras").exists() and (run_copy / "config.json").exists()


# ---------------------------------------------------------------------------------------
# 3. Never through a symbolic link


@pytest.mark.parametrize("name", [".lock", "metrics.jsonl", "state.json", "model.prev.keras",
                                  "charlm-tui.log"])
def test_a_run_file_that_is_a_link_is_refused_and_its_target_untouched(name, run_copy, corpus_file, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (run_copy / name).unlink(missing_ok=True)
    (run_copy / name).symlink_to(victim)
    out = charlm("train", "--corpus", corpus_file, "--run", run_copy, *TINY, "--steps", "1", "--length", "0")
    assert_one_line_refusal(out, f"{run_copy / name} is a symbolic link", "remove the link")
    assert victim.read_text() == "precious\n"


def test_a_fifo_as_a_run_file_is_refused_without_hanging(run_copy, corpus_file):
    os.unlink(run_copy / "metrics.jsonl")
    os.mkfifo(run_copy / "metrics.jsonl")
    out = charlm("train", "--corpus", corpus_file, "--run", run_copy, *TINY, "--steps", "1", timeout=120)
    assert_one_line_refusal(out, "metrics.jsonl is not a regular file")


def test_the_writers_never_follow_a_link_planted_in_the_run_directory(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    # A temporary name another process (or a planted link) holds: removed, never written through.
    (run.path / f".state.json.tmp-{os.getpid()}").symlink_to(victim)
    run.write_state({"step": 1})
    assert json.loads(run.state_path.read_text()) == {"step": 1} and not run.state_path.is_symlink()
    # A link at the final name is replaced by the file, its target left alone.
    (run.path / "vocab.json").symlink_to(victim)
    atomic_write_bytes(run.path / "vocab.json", b"{}")
    assert not (run.path / "vocab.json").is_symlink()
    run.metrics_path.symlink_to(victim)
    with pytest.raises(RunDirError, match="symbolic link"):
        run.append_metrics({"step": 1})
    run.lock_path.symlink_to(victim)
    with pytest.raises(RunDirError, match="symbolic link"):
        run.acquire()
    run.samples_dir.symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(RunDirError, match="link or not a folder"):
        run.write_samples("epoch-0001", "text")
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "epoch-0001.txt").exists()


def test_a_resume_drops_the_rows_after_its_checkpoint_and_the_lives_that_saved_nothing(tmp_path):
    """Lives killed (or stopped at once) at the checkpoint's step would each leave a start
    row there: the session resuming from it logs its start once, as if they never ran."""
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    kept = [("start", 0), ("interval", 10), ("epoch", 20), ("end", 20)]
    redone = [("start", 20), ("end", 20), ("start", 20), ("interval", 25)]
    for kind, step in kept + redone:
        run.append_metrics({"kind": kind, "step": step})
    run.keep_metrics_up_to(20)
    assert [(row["kind"], row["step"]) for row in run.read_metrics()] == kept


@pytest.mark.trains
def test_a_planted_link_at_the_checkpoints_temporary_name_is_not_written_through(tmp_path):
    from engine.modeling.model import build_model

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    (run.path / f".model-{os.getpid()}.tmp.keras").symlink_to(victim)  # Keras writes to this name
    checkpoints.save_model(run, build_model(20, tiny_config()))
    assert victim.read_bytes() == b"precious\n"
    assert saved_step(run.model_path) == 0


def test_exports_take_a_new_name_and_never_replace_or_follow(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "samples.txt").write_text("an earlier export\n")
    (folder / "samples-2.txt").symlink_to(victim)
    assert write_new_file(folder, "samples", "new text\n") == folder / "samples-3.txt"
    assert write_new_file(folder, "samples", "newer text\n") == folder / "samples-4.txt"
    assert (folder / "samples-3.txt").read_text() == "new text\n"
    assert (folder / "samples.txt").read_text() == "an earlier export\n"
    assert victim.read_text() == "precious\n"
    assert sorted(p.name for p in folder.iterdir()) == ["samples-2.txt", "samples-3.txt", "samples-4.txt",
                                                        "samples.txt"]  # no temporary left


# ---------------------------------------------------------------------------------------
# 4. rm -rf RUN while training


@pytest.mark.trains
def test_a_run_directory_deleted_while_training_is_made_again_with_the_work(corpus_file, tmp_path):
    run = tmp_path / "run"
    process = start_training(corpus_file, run, "--epochs", "1000", "--time-budget", BUDGET_SECONDS)
    wait_for_training(process, run)
    # rm -rf, made atomic (a rename away, then the removal) so it cannot race the trainer's writes
    os.rename(run, tmp_path / "gone")
    shutil.rmtree(tmp_path / "gone")
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert f"{run} was deleted or moved during training; made it again" in stdout
    assert saved_step(run / "model.keras") == summary(stdout)["step"]
    sampled = charlm("sample", "--run", run, "--length", "10", "--seed", "1")
    assert sampled.returncode == 0, sampled.stderr


@pytest.mark.trains
def test_a_final_checkpoint_that_cannot_be_written_is_saved_elsewhere_and_said_where(corpus_file, tmp_path):
    run = tmp_path / "run"
    cache = tmp_path / "cache"
    process = start_training(corpus_file, run, "--epochs", "1000", "--time-budget", BUDGET_SECONDS,
                             env={**ENV, "XDG_CACHE_HOME": str(cache)})
    wait_for_training(process, run)
    os.rename(run, tmp_path / "gone")
    run.write_text("a file where the run directory was: it cannot be made again\n")
    stdout, stderr = process.communicate(timeout=300)
    out = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert_one_line_refusal(out, "the last checkpoint was not saved", "the model was saved in")
    rescued = list((cache / "charlm-tui").glob("charlm-tui-rescue-*"))
    assert len(rescued) == 1 and str(rescued[0]) in stderr
    assert saved_step(rescued[0] / "model.keras") == summary(stdout)["step"]
    sampled = charlm("sample", "--run", rescued[0], "--length", "10", "--seed", "1")
    assert sampled.returncode == 0, sampled.stderr


# ---------------------------------------------------------------------------------------
# 5. --lr on resume


@pytest.mark.trains
def test_a_new_learning_rate_on_resume_reaches_the_optimizer(run_copy, corpus_file):
    import dataclasses

    from engine.tfsetup import keras

    run = RunDir(run_copy)  # a constant rate, so the optimizer holds --lr itself (not a schedule's point)
    run.write_config(dataclasses.replace(run.load_config(), schedule="constant"), run.corpus_meta())
    out = charlm("train", "--corpus", corpus_file, "--run", run_copy, *TINY, "--steps", "1", "--length", "0",
                 "--lr", "0.002")
    assert out.returncode == 0, out.stderr
    assert "resuming with learning rate" in out.stdout and "-> 0.002" in out.stdout
    optimizer = keras().saving.load_model(run_copy / "model.keras", safe_mode=True).optimizer
    assert int(optimizer.iterations.numpy()) == 3
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(0.002)
    assert RunDir(run_copy).load_config().lr == 0.002


@pytest.mark.trains
def test_a_new_peak_learning_rate_on_resume_is_said_and_scheduled(run_copy, corpus_file):
    out = charlm("train", "--corpus", corpus_file, "--run", run_copy, *TINY, "--steps", "1", "--length", "0",
                 "--lr", "0.002")
    assert out.returncode == 0, out.stderr
    assert "resuming with learning rate 0.02 -> 0.002 (the schedule's peak)" in out.stdout
    assert RunDir(run_copy).load_config().lr == 0.002


@pytest.mark.trains
def test_a_new_clipnorm_on_resume_reaches_the_optimizer(tiny_corpus, tmp_path):
    from engine import events
    from engine.run.training import Trainer
    from engine.tfsetup import keras

    run = tmp_path / "run"
    Trainer(tiny_corpus, tiny_config(steps=1), run, sample_each_epoch=False).run()
    received = []
    Trainer(tiny_corpus, tiny_config(steps=1, clipnorm=0.5), run, on_event=received.append,
            sample_each_epoch=False).run()
    assert any("clipnorm 1.0 -> 0.5" in e.message for e in received if isinstance(e, events.Notice))
    assert keras().saving.load_model(run / "model.keras", safe_mode=True).optimizer.clipnorm == 0.5


# ---------------------------------------------------------------------------------------
# 6. Time stopped is not training time

WORKER_THREAD_TRAINING = """
import json, sys, threading
from engine.data.corpus import load_corpus
from engine.run.training import Trainer
from tests.conftest import tiny_config

corpus, run = load_corpus(sys.argv[1], lowercase=True), sys.argv[2]
config = tiny_config(epochs=1000, log_every=2, time_budget=float(sys.argv[3]))
result = {}
thread = threading.Thread(target=lambda: result.update(
    finished=Trainer(corpus, config, run, sample_each_epoch=False).run()))
thread.start()
thread.join()
print(json.dumps({"elapsed": result["finished"].elapsed, "chars_per_sec": result["finished"].chars_per_sec}))
"""


@pytest.mark.parametrize("where", ["command line", "worker thread"])
@pytest.mark.trains
def test_time_stopped_by_sigstop_counts_neither_toward_the_budget_nor_the_rate(where, corpus_file, tmp_path):
    run = tmp_path / "run"
    if where == "command line":
        process = start_training(corpus_file, run, "--epochs", "1000", "--time-budget", BUDGET_SECONDS)
    else:  # as in the app: Trainer.run() on a thread that is not the main one
        process = subprocess.Popen([sys.executable, "-c", WORKER_THREAD_TRAINING, str(corpus_file), str(run),
                                    str(BUDGET_SECONDS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, env={**ENV, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    # Stopped while it trains: a stop inside the first step's tracing, which holds the GIL
    # for long stretches once it goes on, can count in part (engine.run.clock.TrainingClock).
    trained_before = wait_for_training(process, run, past_start=True)
    process.send_signal(signal.SIGSTOP)
    time.sleep(STOPPED_SECONDS)
    process.send_signal(signal.SIGCONT)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    # The budget is met in training seconds: had the stop counted, the clock would have
    # passed trained_before + STOPPED_SECONDS > BUDGET_SECONDS at the first batch after it.
    elapsed = summary(stdout)["elapsed"]
    assert BUDGET_SECONDS <= elapsed < trained_before + STOPPED_SECONDS
    state = json.loads((run / "state.json").read_text())
    assert BUDGET_SECONDS <= state["elapsed"] < trained_before + STOPPED_SECONDS
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    walls = [row["wall"] for row in rows]
    assert max(b - a for a, b in zip(walls, walls[1:])) < STOPPED_SECONDS / 2  # no row spans the stop
