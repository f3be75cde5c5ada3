"""Reliability promises, each checked the way a user would meet the failure.

Bad corpora, locks, mismatches, NaN and damaged checkpoints go through the real
`charlm-tui` process (exit code, one line on stderr, no traceback). Faults that need a
broken disk are simulated: in-process by making the checkpoint write fail with ENOSPC or
EROFS (the tests run as root, so chmod would not stop them), or with RLIMIT_FSIZE in a
real process. kill -9 is real: one run is killed and resumed twenty times.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from engine import events
from engine.errors import RunDirError
from engine.files import checkpoints
from engine.files.rundir import RunDir
from engine.files.vetting import archive_problem
from tests.conftest import tiny_config, tiny_text
from tests.runs import ENV, ROOT, TINY, assert_one_line_refusal, charlm, lambda_model, poison, saved_step


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tui.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)


def snapshot(run: Path) -> dict[str, bytes]:
    """Every file of a run directory but the lock (whose pid line is informational)."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.name != ".lock"}


# ---------------------------------------------------------------------------------------
# Bad corpora, through the real command line

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4
LATIN1 = ("Café, naïve façade: déjà vu à la crème brûlée. " * 40).encode("latin-1")
ENGLISH = tiny_text(3000, seed=2)


def _folder_without_text(root: Path) -> Path:
    folder = root / "pictures"
    folder.mkdir()
    (folder / "photo.png").write_bytes(PNG)
    return folder


@pytest.mark.parametrize("name, make, expected", [
    ("missing", lambda root: root / "nope.txt", ["no such file, folder or named corpus"]),
    ("folder without text", _folder_without_text, ["has no .txt files"]),
    ("empty", b"", ["is empty"]),
    ("one character", b"a" * 5000, ["only one distinct character"]),
    ("shorter than one window", b"just a few words here\n", ["too short", "--maxlen"]),
    ("png", PNG, ["a PNG image"]),
    ("elf", ELF, ["an ELF executable"]),
    ("latin-1", LATIN1, ["not valid UTF-8", "Latin-1", "--encoding latin-1"]),
    ("utf-16", ENGLISH.encode("utf-16"), ["UTF-16", "iconv -f UTF-16", "--encoding utf-16"]),
    ("utf-16 without BOM", ENGLISH.encode("utf-16-le"), ["UTF-16", "--encoding utf-16"]),
    ("utf-32", ENGLISH.encode("utf-32"), ["UTF-32", "--encoding utf-32"]),
])
def test_a_bad_corpus_is_one_clear_line_a_nonzero_exit_and_nothing_written(name, make, expected, tmp_path):
    path = make(tmp_path) if callable(make) else tmp_path / "corpus.txt"
    if not callable(make):
        path.write_bytes(make)
    out = charlm("train", "--corpus", path, "--run", tmp_path / "run", *TINY, cwd=tmp_path)
    assert_one_line_refusal(out, *expected)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("data, encoding", [
    (LATIN1, "latin-1"),
    (ENGLISH.encode("utf-16"), "utf-16"),
    (ENGLISH.encode("utf-16-le"), "utf-16-le"),
])
def test_the_suggested_encoding_works(data, encoding, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(data)
    out = charlm("train", "--corpus", path, "--run", tmp_path / "run", *TINY, "--encoding", encoding,
                 "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["chars"] == len(data.decode(encoding).lstrip("\ufeff"))


def test_mixed_newlines_are_one_newline_each(tmp_path):
    lines = tiny_text(4000, seed=4).split("\n")
    text = "".join(line + ("\r\n", "\r", "\n")[i % 3] for i, line in enumerate(lines))
    path = tmp_path / "mixed.txt"
    path.write_bytes(text.encode("utf-8"))
    out = charlm("train", "--corpus", path, "--run", tmp_path / "run", *TINY, "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    expected = text.replace("\r\n", "\n").replace("\r", "\n")  # (case is kept by default)
    assert summary["chars"] == len(expected) and summary["vocab_size"] == len(set(expected))


def cjk_text(distinct: int = 3000, length: int = 20_000, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    alphabet = [chr(0x4E00 + i) for i in range(distinct)]
    chars = alphabet + list(rng.choice(alphabet, size=length - distinct))
    rng.shuffle(chars)
    for i in range(0, len(chars), 12):
        chars[i] = "\n" if i % 240 == 0 else "\u3002"
    return "".join(chars)


@pytest.mark.trains
def test_cjk_text_with_thousands_of_characters_trains_and_samples(tmp_path):
    from engine.data.corpus import load_corpus
    from engine.run.follow import open_run
    from engine.run.training import Trainer

    path = tmp_path / "cjk.txt"
    path.write_text(cjk_text(), encoding="utf-8")
    out = charlm("train", "--corpus", path, "--run", tmp_path / "run", *TINY, "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["vocab_size"] > 2900

    corpus = load_corpus(path, lowercase=True)
    assert corpus.ids.dtype == np.uint16 and len(corpus.vocab) > 2900
    finished = Trainer(corpus, tiny_config(steps=2), tmp_path / "run", sample_each_epoch=False).run()
    assert finished.step == 2
    text = open_run(tmp_path / "run").sampler.generate(corpus.text(0, 16), [1.0], 30, seed=1)[1.0]
    assert len(text) == 30 and set(text) <= set(corpus.vocab)


# The CLI's main() with the process's own peak RSS (VmHWM) written at exit: rusage's
# ru_maxrss would count the pytest process it was forked from (TensorFlow and all).
MEASURED = ("import atexit, re, sys\n"
            "def peak():\n"
            "    status = open('/proc/self/status').read()\n"
            "    print('peak-rss-kib', re.search(r'VmHWM:\\s*(\\d+)', status).group(1), file=sys.stderr)\n"
            "atexit.register(peak)\n"
            "from tui.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")


def run_measured(args: list) -> tuple[int, str, str, int]:
    """Run the CLI; return (exit code, stdout, stderr, peak RSS of that process in bytes)."""
    out = subprocess.run([sys.executable, "-c", MEASURED, *map(str, args)], capture_output=True, text=True,
                         timeout=300, env=ENV, cwd=ROOT)
    *stderr, last = out.stderr.splitlines() or [""]
    assert last.startswith("peak-rss-kib "), out.stderr
    return out.returncode, out.stdout, "\n".join(stderr), int(last.split()[1]) * 1024


def test_a_34_mb_corpus_loads_in_seconds_in_about_its_size_of_memory(tmp_path):
    block = tiny_text(1 << 20, seed=5).encode()
    path = tmp_path / "big.txt"
    with open(path, "wb") as handle:
        for _ in range(33):
            handle.write(block)
    size = path.stat().st_size
    started = time.monotonic()
    code, stdout, stderr, peak = run_measured(["train", "--corpus", path, "--run", tmp_path / "run",
                                               "--dry-run", "--json"])
    seconds = time.monotonic() - started
    assert code == 0, stderr
    assert json.loads(stdout.strip().splitlines()[-1])["chars"] == size
    # One byte per character for the ids, plus a fixed cost (interpreter, numpy, rich and
    # the chunk being decoded); a copy of the whole text as str or UTF-32 would show.
    assert peak < size + 96 * 2**20, f"peak RSS {peak / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB file"
    assert seconds < 60
    print(f"peak RSS {peak / 2**20:.0f} MiB for {size / 2**20:.0f} MiB in {seconds:.1f} s")


def test_reading_progress_is_reported_in_order_up_to_the_total(tmp_path, monkeypatch):
    from engine.data import corpus as corpus_module
    from engine.data import textfiles

    monkeypatch.setattr(textfiles, "CHUNK_BYTES", 4096)
    path = tmp_path / "text.txt"
    path.write_text(tiny_text(50_000), encoding="utf-8")
    reports = []
    corpus_module.load_corpus(path, on_progress=lambda done, total: reports.append((done, total)))
    done = [d for d, _ in reports]
    assert len(reports) > 20 and done == sorted(done) and reports[-1] == (2 * 50_000, 2 * 50_000)


# ---------------------------------------------------------------------------------------
# Interruptions


@pytest.mark.trains
def test_a_stop_while_paused_saves_a_checkpoint_and_ends(tiny_corpus, tmp_path):
    from engine.run.training import Trainer

    received = []
    trainer = Trainer(tiny_corpus, tiny_config(epochs=1000), tmp_path / "run", on_event=received.append)
    worker = threading.Thread(target=trainer.run)
    worker.start()
    deadline = time.monotonic() + 120
    while not any(isinstance(e, events.BatchProgress) for e in received) and time.monotonic() < deadline:
        time.sleep(0.05)
    trainer.pause()
    time.sleep(0.5)
    trainer.stop()  # what a signal handler does
    worker.join(60)
    assert not worker.is_alive()
    finished = received[-1]
    assert isinstance(finished, events.TrainingFinished) and finished.reason == "stopped"
    assert saved_step(tmp_path / "run" / "model.keras") == finished.step


@pytest.mark.trains
def test_a_stop_during_the_epoch_end_evaluation_stops_at_the_epoch_boundary(tiny_corpus, tmp_path,
                                                                           monkeypatch):
    from engine.run.training import Trainer

    evaluate = Trainer.heldout_loss

    def stopped_while_evaluating(self, stop=None):
        self.stop()  # the signal lands while the held-out loss is computed
        return evaluate(self, stop=stop)

    monkeypatch.setattr(Trainer, "heldout_loss", stopped_while_evaluating)
    received = []
    trainer = Trainer(tiny_corpus, tiny_config(epochs=50), tmp_path / "run", on_event=received.append)
    finished = trainer.run()
    per_epoch = trainer.train_windows.batches_per_epoch
    assert (finished.reason, finished.step) == ("stopped", per_epoch)
    # Neither the rest of the scoring nor a sample round keeps the user waiting; the epoch
    # is listed with its training loss, unscored (tests/test_epoch_history.py).
    assert not any(isinstance(e, events.SamplesGenerated) for e in received)
    assert [(e.epoch, e.val_loss) for e in received if isinstance(e, events.EpochEnd)] == [(1, None)]
    assert saved_step(tmp_path / "run" / "model.keras") == per_epoch


def check_run_dir(run: Path) -> int | None:
    """Assert that nothing in the run directory is half-written; the checkpoint's step."""
    rundir = RunDir(run)
    if rundir.config_path.exists():
        rundir.load_config()
    if rundir.vocab_path.exists():
        rundir.load_vocab()
    if rundir.state_path.exists():
        assert isinstance(json.loads(rundir.state_path.read_text()), dict)
    if rundir.metrics_path.exists():
        *complete, _torn_or_empty = rundir.metrics_path.read_bytes().split(b"\n")
        for line in complete:
            assert isinstance(json.loads(line), dict), line
    for sample in rundir.samples_dir.glob("*.txt"):
        assert sample.read_text(encoding="utf-8").startswith("--- seed: ")
    steps = {}
    for path in (rundir.previous_model_path, rundir.model_path):
        if path.exists():
            assert archive_problem(path) is None, path
            steps[path.name] = saved_step(path)
    if len(steps) == 2:
        assert steps["model.prev.keras"] <= steps["model.keras"]
    return steps.get("model.keras")


def model_identity(path: Path):
    try:
        return path.stat().st_ino, path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


@pytest.mark.slow
def test_kill_9_at_random_moments_never_leaves_a_half_written_run(corpus_file, tmp_path):
    run = tmp_path / "run"
    rng = random.Random(20240611)
    args = ["train", "--corpus", corpus_file, "--run", run, *TINY, "--batch-size", "64", "--epochs", "100000",
            "--length", "20", "--checkpoint-every", "0"]
    torn = b'{"kind": "interval", "epo'
    step, resumed_checks, kills = None, 0, 15
    for kill in range(kills):
        before = model_identity(run / "model.keras")
        process = start(*args)
        started = time.monotonic()
        if kill % 3 == 0:  # anywhere: importing, loading, writing config, training
            time.sleep(rng.uniform(0.0, 6.0))
        else:  # while it writes: soon after its first checkpoint of this life
            while model_identity(run / "model.keras") == before and time.monotonic() - started < 120:
                assert process.poll() is None, process.communicate()
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 1.0))
        process.kill()
        stdout, stderr = process.communicate(timeout=60)
        assert "Traceback" not in stderr, stderr

        new_step = check_run_dir(run)
        if model_identity(run / "model.keras") != before and new_step is not None:
            # It wrote a checkpoint, so it started from the last one: the saved step,
            # with its optimizer state, and went on from there.
            expected = f"resuming at step {step:,}" if step else "new run"
            assert expected in stdout, (expected, stdout[-3000:])
            assert step is None or new_step > step
            resumed_checks += step is not None
        step = new_step if new_step is not None else step
        if kill == 6 and (run / "metrics.jsonl").exists():
            with open(run / "metrics.jsonl", "ab") as metrics:  # as a kill mid-append on a full disk
                metrics.write(torn)

    assert resumed_checks >= 5, "too few kills landed after a resume to test it"
    assert step and step > 0
    out = charlm(*args, "--steps", "2", "--length", "0", "--json")
    assert out.returncode == 0, out.stderr
    assert f"resuming at step {step:,}" in out.stdout
    assert json.loads(out.stdout.strip().splitlines()[-1])["step"] == step + 2
    assert check_run_dir(run) == step + 2
    raw = (run / "metrics.jsonl").read_bytes()
    assert torn not in raw and all(json.loads(line) for line in raw.splitlines())
    rows = RunDir(run).read_metrics()
    assert [r["step"] for r in rows] == sorted(r["step"] for r in rows)
    assert len({(r["kind"], r["step"]) for r in rows}) == len(rows)  # nothing logged twice
    assert not list(run.glob(".*.tmp*"))  # a killed process's temporaries are cleaned up
    from engine.tfsetup import keras

    model = keras().saving.load_model(run / "model.keras", safe_mode=True)
    assert any(np.abs(v.numpy()).sum() > 0 for v in model.optimizer.variables if v.shape.rank)


# ---------------------------------------------------------------------------------------
# Faults


@pytest.mark.parametrize("code, reason", [(errno.ENOSPC, "the disk is full"),
                                          (errno.EROFS, "the file system is read-only")])
@pytest.mark.trains
def test_a_failed_checkpoint_is_reported_keeps_the_weights_and_can_be_retried(code, reason, tiny_corpus,
                                                                               tmp_path, monkeypatch):
    from engine.run.training import Trainer
    from engine.tfsetup import keras

    run = tmp_path / "run"
    Trainer(tiny_corpus, tiny_config(steps=2, epochs=5), run, sample_each_epoch=False).run()
    good = (run / "model.keras").read_bytes()
    real_save = keras().Model.save
    failing = True

    def save(model, filepath, *args, **kwargs):
        if failing:
            Path(filepath).write_bytes(good[: len(good) // 2])  # half written, then the disk fails
            raise OSError(code, os.strerror(code))
        return real_save(model, filepath, *args, **kwargs)

    monkeypatch.setattr(keras().Model, "save", save)
    received = []
    trainer = Trainer(tiny_corpus, tiny_config(steps=4, epochs=5, checkpoint_every=0.0), run,
                      on_event=received.append, sample_each_epoch=False)
    finished = trainer.run()
    notices = [e.message for e in received if isinstance(e, events.Notice)]
    assert finished.step == 6 and len(notices) >= 2
    assert all(reason in message and "next checkpoint will retry" in message for message in notices)
    assert reason in str(trainer.checkpoint_error)
    assert (run / "model.keras").read_bytes() == good and not (run / "model.prev.keras").exists()
    assert not list(run.glob(".*tmp*"))  # no half-written file left behind
    assert int(trainer.model.optimizer.iterations.numpy()) == 6  # the weights are still in memory

    with pytest.raises(RunDirError, match=reason):
        trainer.save_checkpoint()  # a retry while the disk is still full fails the same way
    failing = False
    trainer.save_checkpoint()  # space freed: the retry saves what was trained
    assert trainer.checkpoint_error is None
    assert saved_step(run / "model.keras") == 6
    assert (run / "model.prev.keras").read_bytes() == good


@pytest.mark.trains
def test_a_file_size_limit_during_training_fails_cleanly_with_nothing_half_written(corpus_file, tmp_path):
    import resource

    run = tmp_path / "run"

    def limit():  # checkpoints (~40 KB) no longer fit; config.json and vocab.json still do
        resource.setrlimit(resource.RLIMIT_FSIZE, (16_384, 16_384))

    out = charlm("train", "--corpus", corpus_file, "--run", run, *TINY, "--steps", "2", "--length", "0",
                 "--checkpoint-every", "0", preexec_fn=limit)
    assert_one_line_refusal(out, "the last checkpoint was not saved", "file size limit")
    assert "training goes on and the next checkpoint will retry" in out.stdout
    assert not (run / "model.keras").exists() and not list(run.glob(".*tmp*"))
    assert RunDir(run).load_config().units == 8 and RunDir(run).load_vocab()


@pytest.mark.trains
def test_nan_loss_on_the_command_line_is_one_line_a_rollback_and_a_lower_lr(run_copy, corpus_file):
    poison(run_copy / "model.keras")
    before = snapshot(run_copy)
    out = charlm("train", "--corpus", corpus_file, "--run", run_copy, *TINY, "--steps", "2", "--length", "0")
    assert_one_line_refusal(out, "loss became nan", "rolled back to the last checkpoint (step 3)", "--lr")
    after = snapshot(run_copy)
    assert {k: after[k] for k in ("model.keras", "model.prev.keras")} == \
        {k: before[k] for k in ("model.keras", "model.prev.keras")}


def lock_owner(run: Path) -> str:
    try:
        return (run / ".lock").read_text().strip()
    except FileNotFoundError:
        return ""


@pytest.mark.trains
def test_a_second_process_on_a_busy_run_directory_is_refused_with_the_first_ones_pid(run_copy, corpus_file):
    first = start("train", "--corpus", corpus_file, "--run", run_copy, *TINY, "--epochs", "100000",
                  "--length", "0")
    try:
        before = model_identity(run_copy / "model.keras")
        deadline = time.monotonic() + 120
        while lock_owner(run_copy) != str(first.pid):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.1)
        second = charlm("train", "--corpus", corpus_file, "--run", run_copy, *TINY, "--steps", "1")
        assert_one_line_refusal(second, "in use by another charlm-tui process", f"pid {first.pid}")
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 143
    assert model_identity(run_copy / "model.keras") != before  # the first one kept training and saved


@pytest.mark.parametrize("options, expected", [
    (["--corpus", "OTHER"], "different vocabulary"),
    (["--units", "9"], "units=8"),
    (["--maxlen", "20"], "maxlen=16"),
    (["--preset", "book"], "objective='all'"),
])
@pytest.mark.trains
def test_a_checkpoint_that_does_not_match_is_refused_and_left_alone(options, expected, run_copy, corpus_file,
                                                                     tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("completely different: 0123456789 xyz!? " * 200)
    options = [str(other) if option == "OTHER" else option for option in options]
    before = snapshot(run_copy)
    args = ["train", "--corpus", corpus_file, "--run", run_copy, *TINY, *options, "--steps", "1"]
    out = charlm(*args)
    assert_one_line_refusal(out, expected, "--fresh")
    assert snapshot(run_copy) == before


def corrupt_the_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "empty"])
@pytest.mark.trains
def test_a_damaged_model_keras_falls_back_to_model_prev_keras_visibly(damage, run_copy):
    model_path, prev_path = run_copy / "model.keras", run_copy / "model.prev.keras"
    if damage == "truncated":
        model_path.write_bytes(model_path.read_bytes()[: model_path.stat().st_size // 2])
    elif damage == "corrupt":
        corrupt_the_middle(model_path)
    else:
        model_path.write_bytes(b"")
    before = snapshot(run_copy)
    notices = []
    model = checkpoints.load_model(RunDir(run_copy), on_notice=notices.append)
    assert int(model.optimizer.iterations.numpy()) == 2
    assert len(notices) == 1 and "model.keras" in notices[0] and "model.prev.keras" in notices[0]
    assert snapshot(run_copy) == before  # both kept

    # Saving over it does not rotate the damaged model.keras into model.prev.keras.
    fresh_view = RunDir(run_copy)  # even without having tried to load it
    checkpoints.save_model(fresh_view, model)
    assert prev_path.read_bytes() == before["model.prev.keras"]
    assert saved_step(model_path) == 2


@pytest.mark.trains
def test_resuming_from_a_damaged_checkpoint_says_so_and_keeps_the_previous_one(run_copy, corpus_file):
    model_path, prev_path = run_copy / "model.keras", run_copy / "model.prev.keras"
    model_path.write_bytes(model_path.read_bytes()[:1000])
    previous = prev_path.read_bytes()

    sampled = charlm("sample", "--run", run_copy, "--length", "10", "--seed", "1", "--json")
    assert sampled.returncode == 0, sampled.stderr
    assert "model.keras" in sampled.stderr and "using the previous one, model.prev.keras" in sampled.stderr

    out = charlm("train", "--corpus", corpus_file, "--run", run_copy, *TINY, "--steps", "1", "--length", "0")
    assert out.returncode == 0, out.stderr
    assert "note: could not load the latest checkpoint (model.keras: not a .keras archive" in out.stdout
    assert "resuming at step 2" in out.stdout
    assert prev_path.read_bytes() == previous  # the damaged file never became model.prev.keras
    assert saved_step(model_path) == 3


@pytest.mark.trains
def test_no_loadable_checkpoint_is_a_clear_error_and_both_files_are_kept(run_copy, corpus_file):
    (run_copy / "model.keras").write_bytes(b"garbage")
    corrupt_the_middle(run_copy / "model.prev.keras")
    before = snapshot(run_copy)
    with pytest.raises(RunDirError, match="no loadable checkpoint.*model.keras.*model.prev.keras"):
        checkpoints.load_model(RunDir(run_copy))
    out = charlm("train", "--corpus", corpus_file, "--run", run_copy, *TINY, "--steps", "1")
    assert_one_line_refusal(out, "no loadable checkpoint")
    assert snapshot(run_copy) == before


# ---------------------------------------------------------------------------------------
# Hostile files


# Keras, loading the hostile file unsafely at the end, warns about its bare optimizer.
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
@pytest.mark.trains
def test_a_model_with_a_lambda_layer_is_refused_and_never_run(run_copy, corpus_file, tmp_path):
    from engine.tfsetup import keras

    marker = tmp_path / "the-lambda-ran"
    model_path = run_copy / "model.keras"
    lambda_model(marker).save(model_path)
    (run_copy / "model.prev.keras").unlink()
    marker.unlink(missing_ok=True)  # building the model ran the lambda once, here
    hostile = model_path.read_bytes()

    assert "Lambda" in archive_problem(model_path)
    with pytest.raises(RunDirError, match="Lambda layer"):
        checkpoints.load_model(RunDir(run_copy))
    for args in (["sample", "--run", run_copy, "--length", "5"],
                 ["train", "--corpus", corpus_file, "--run", run_copy, *TINY, "--steps", "1"]):
        assert_one_line_refusal(charlm(*args), "Lambda layer")
    assert not marker.exists() and model_path.read_bytes() == hostile

    # The file is truly hostile: Keras outside safe mode runs its code.
    keras().saving.load_model(model_path, safe_mode=False)
    assert marker.exists()


def _rewrite_config(model_path: Path, change) -> None:
    with zipfile.ZipFile(model_path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    change(config)
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(model_path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _dense(config):
    return next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")


@pytest.mark.parametrize("change, expected", [
    (lambda c: _dense(c).update(module="os", class_name="system"), "'system' from 'os'"),
    (lambda c: _dense(c).update(module="builtins", class_name="exec"), "'exec' from 'builtins'"),
    (lambda c: _dense(c).update(registered_name="Custom>Dense"), "custom object"),
    (lambda c: _dense(c)["config"].update(kernel_initializer={"module": "keras.initializers",
                                                              "class_name": "Foreign", "config": {}}),
     "'Foreign'"),
])
@pytest.mark.trains
def test_a_checkpoint_naming_foreign_code_is_refused_before_keras_reads_it(change, expected, run_copy):
    model_path = run_copy / "model.keras"
    _rewrite_config(model_path, change)
    assert expected in archive_problem(model_path)
    notices = []
    checkpoints.load_model(RunDir(run_copy), on_notice=notices.append)  # model.prev.keras is used instead
    assert expected in notices[0]
    (run_copy / "model.prev.keras").unlink()
    with pytest.raises(RunDirError, match=re.escape(expected)):
        checkpoints.load_model(RunDir(run_copy))


def _with_config(run: Path, **fields) -> None:
    data = json.loads((run / "config.json").read_text())
    data["config"].update(fields)
    (run / "config.json").write_text(json.dumps(data))


@pytest.mark.parametrize("fields, expected", [
    ({"units": "8"}, "units is '8', not int"),
    ({"maxlen": 16.5}, "maxlen is 16.5, not int"),
    ({"lr": "fast"}, "lr is 'fast', not float"),
    ({"lowercase": "yes"}, "lowercase is 'yes', not bool"),
    ({"dropout": None}, "dropout is None, not float"),
    ({"val_fraction": float("nan")}, "val_fraction is nan"),
    ({"temperatures": "hot"}, "temperatures is 'hot', not list of numbers"),
    ({"temperatures": [0.5, "x"]}, "not list of numbers"),
    ({"time_budget": "60"}, "time_budget is '60'"),
    ({"steps": True}, "steps is True"),
    ({"extra": []}, "extra is [], not dict"),
    ({"units": 0}, "--units must be between"),
    ({"optimizer": "sgd"}, "optimizer must be"),
])
@pytest.mark.trains
def test_config_json_with_wrong_types_is_refused_with_a_clear_message(fields, expected, run_copy):
    _with_config(run_copy, **fields)
    with pytest.raises(RunDirError, match=re.escape(expected)) as refusal:
        RunDir(run_copy).load_config()
    assert "config.json is not a valid charlm-tui config" in str(refusal.value)


@pytest.mark.parametrize("content", [
    "", "not json", "[]", "{}", '{"config": []}', '{"config": "x"}', "[" * 100_000,
])
def test_config_json_that_is_not_a_config_is_refused(content, run_copy):
    (run_copy / "config.json").write_text(content)
    with pytest.raises(RunDirError, match="config.json"):
        RunDir(run_copy).load_config()


@pytest.mark.parametrize("content", [
    "garbage", "[]", '{"vocab": "abc"}', '{"vocab": ["a", "a"]}', '{"vocab": ["ab", "c"]}',
    '{"vocab": [1, 2]}', '{"vocab": ["a"]}', '{"vocab": null}', b"\xff\xfe\x00",
])
def test_vocab_json_garbage_is_refused(content, run_copy):
    path = run_copy / "vocab.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(RunDirError, match="vocab.json"):
        RunDir(run_copy).load_vocab()


def test_garbage_run_files_on_the_command_line_are_one_line(run_copy, corpus_file):
    _with_config(run_copy, units="many")
    out = charlm("train", "--corpus", corpus_file, "--run", run_copy, *TINY, "--steps", "1")
    assert_one_line_refusal(out, "config.json is not a valid charlm-tui config", "units is 'many'")
    assert_one_line_refusal(charlm("sample", "--run", run_copy), "units is 'many'")


@pytest.mark.trains
def test_garbage_state_and_metrics_do_not_stop_a_resume(run_copy, corpus_file):
    (run_copy / "state.json").write_text('{"elapsed": "a while", "step": [1]}')
    with open(run_copy / "metrics.jsonl", "a") as metrics:
        metrics.write('{"kind": "interval", "step": "three"}\n[1, 2]\n{"torn": ')
    out = charlm("train", "--corpus", corpus_file, "--run", run_copy, *TINY, "--steps", "1", "--length", "0")
    assert out.returncode == 0, out.stderr
    assert all(isinstance(row["step"], int) for row in RunDir(run_copy).read_metrics())


SOURCES = sorted((ROOT / "engine").rglob("*.py")) + sorted((ROOT / "tui").rglob("*.py"))
FORBIDDEN = [r"\bpickle\b", r"\bmarshal\b", r"\bshelve\b", r"(?<![\w.])eval\(", r"(?<![\w.])exec\(",
             r"allow_pickle\s*=\s*True", r"safe_mode\s*=\s*False", r"enable_unsafe_deserialization",
             r"\bnp\.load\(", r"\bnumpy\.load\(", r"yaml\.(unsafe_)?load", r"\bjoblib\b"]


def test_no_source_can_execute_or_unpickle_what_it_reads():
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in SOURCES for number, line in enumerate(path.read_text().splitlines(), 1)
             if any(re.search(pattern, line) for pattern in FORBIDDEN)]
    assert not found
    loads = [f"{path.relative_to(ROOT)}: {call}" for path in SOURCES
             for call in re.findall(r"(?:saving|models)\.load_model\([^)]*\)", path.read_text())]
    assert loads and all("safe_mode=True" in call for call in loads), loads


@pytest.mark.trains
def test_resume_and_sampling_never_unpickle(run_copy, corpus_file, monkeypatch, capsys):
    import pickle

    from engine.data.corpus import load_corpus
    from engine.run.training import Trainer
    from engine.tfsetup import keras
    from tui.cli import main

    keras()  # imported before the guards: only what reads the run directory is watched

    def refuse(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    real_np_load = np.load

    def np_load(*args, allow_pickle=False, **kwargs):
        assert not allow_pickle, "np.load with allow_pickle=True"
        return real_np_load(*args, allow_pickle=False, **kwargs)

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(np, "load", np_load)
    Trainer(load_corpus(corpus_file, lowercase=False), tiny_config(steps=1, epochs=5), run_copy,
            sample_each_epoch=False).run()  # (the run keeps case, as the command line does by default)
    assert main(["sample", "--run", str(run_copy), "--length", "10", "--seed", "2"]) == 0
    assert "temperature" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------
# Long runs (bench/soak_memory.py measures the memory itself; these pin down the causes)


@pytest.mark.trains
def test_checkpoints_do_not_build_throwaway_optimizers(tiny_corpus, tmp_path, monkeypatch):
    """Keras's saving made an Optimizer(1.0) per save and per load to list attributes to
    skip, leaking ~70 KB each time: one leak per checkpoint, for the whole run."""
    from engine.modeling.model import build_model
    from engine.tfsetup import keras

    Optimizer = keras().optimizers.Optimizer
    model = build_model(len(tiny_corpus.vocab), tiny_config())
    model.optimizer.build(model.trainable_variables)
    run = RunDir(tmp_path / "run")
    run.create()
    checkpoints.save_model(run, model)
    made = []
    construct = Optimizer.__init__
    monkeypatch.setattr(Optimizer, "__init__",
                        lambda self, *a, **k: (made.append(1), construct(self, *a, **k))[1])
    for _ in range(3):
        checkpoints.save_model(run, model)
    assert made == []
    assert keras().saving.load_model(run.model_path, safe_mode=True) and len(made) == 1  # only Adam itself


@pytest.mark.trains
def test_epoch_after_epoch_keras_traces_nothing_new(tiny_corpus, tmp_path):
    from engine.compat import traced_function_count
    from engine.run.training import Trainer

    counts = {}

    def on_event(event):
        if isinstance(event, events.EpochEnd):
            counts[event.epoch] = traced_function_count()

    Trainer(tiny_corpus, tiny_config(epochs=5, batch_size=64, sample_length=5), tmp_path / "run",
            on_event=on_event).run()
    assert counts[2] is not None, "TensorFlow no longer lists traced functions (see tests/test_compat.py)"
    assert counts[2] == counts[5], counts  # fit, evaluation, checkpoint and sampling reuse their traces
