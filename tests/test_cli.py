"""The headless command line, run as a user runs it: a real process, real exit codes."""

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import NIETZSCHE
from tests.runs import TINY, charlm


def test_help_answers_without_importing_tensorflow():
    code = ("import sys; from tui.cli import main\n"
            "try: main(['--help'])\nexcept SystemExit: pass\n"
            "try: main(['train', '--help'])\nexcept SystemExit: pass\n"
            "print('TF' if 'tensorflow' in sys.modules or 'keras' in sys.modules else 'no TF')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "charlm-tui train" in out.stdout and "--time-budget" in out.stdout
    assert out.stdout.strip().endswith("no TF")


@pytest.mark.skipif(not NIETZSCHE.exists(), reason="needs ../shared/corpora/nietzsche.txt")
def test_dry_run_prints_the_books_numbers_for_the_book_preset(tmp_path):
    out = charlm("train", "--corpus", NIETZSCHE, "--preset", "book", "--run", tmp_path / "r",
                 "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    for expected in ("Corpus length: 600894", "Unique characters: 57", "200278 over the whole text",
                     "102,585 parameters"):
        assert expected in out.stdout
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert (summary["windows_total"], summary["parameters"]) == (200_278, 102_585)
    assert not (tmp_path / "r").exists()  # a dry run writes nothing


@pytest.mark.trains
def test_train_then_sample_from_the_saved_run(tiny_corpus_path, tmp_path):
    run = tmp_path / "run"
    out = charlm("train", "--corpus", tiny_corpus_path, "--run", run, *TINY,
                 "--epochs", "1", "--length", "30", "--json")
    assert out.returncode == 0, out.stderr
    for expected in ("Corpus length: 6000", "Total params", "----- temperature: 1.2",
                     "All epochs done at the end of epoch 1, step "):
        assert expected in out.stdout
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["reason"] == "epochs" and summary["val_loss"] > 0
    assert "cudart" not in out.stderr and "absl" not in out.stderr

    sampled = charlm("sample", "--run", run, "--length", "50", "--seed", "3", "--json",
                     "--temperatures", "0,1")
    assert sampled.returncode == 0, sampled.stderr
    result = json.loads(sampled.stdout)
    assert [len(t) for t in result["samples"].values()] == [50, 50]
    again = charlm("sample", "--run", run, "--length", "50", "--seed", "3", "--json", "--temperatures", "0,1")
    assert json.loads(again.stdout) == result  # --seed makes it reproducible
    plain = charlm("sample", "--run", run, "--seed-text", "the will", "--length", "20", "--top-k", "3")
    assert plain.returncode == 0 and "the will" in plain.stdout

    # "two more minutes" on a run whose epochs are done trains nothing, and says how to go on
    more = charlm("train", "--corpus", tiny_corpus_path, "--run", run, "--time-budget", "2m", "--length", "0",
                  "--json")
    assert more.returncode == 0, more.stderr
    assert "this run has done all its epochs (1): nothing to train (--epochs N, more than 1" in more.stdout
    assert json.loads(more.stdout.strip().splitlines()[-1])["step"] == summary["step"]
    assert "target chars/s" not in more.stdout.splitlines()[-2], "no rate for a session that trained nothing"
    on = charlm("train", "--corpus", tiny_corpus_path, "--run", run, "--epochs", "2", "--length", "0",
                "--json")
    assert on.returncode == 0, on.stderr
    assert json.loads(on.stdout.strip().splitlines()[-1])["step"] == 2 * summary["step"]


@pytest.mark.trains
def test_sample_json_says_how_much_of_each_sample_is_copied_when_the_training_text_is_here(
        tiny_corpus_path, tmp_path, monkeypatch):
    from engine.data.corpus import load_corpus
    from engine.modeling.novelty import index_for

    run, no_named_corpora = tmp_path / "run", tmp_path / "corpora"
    no_named_corpora.mkdir()
    monkeypatch.setenv("CHARLM_CORPORA", str(no_named_corpora))  # no corpora/tiny.txt to fall back on
    trained = charlm("train", "--corpus", tiny_corpus_path, "--run", run, *TINY,
                     "--steps", "3", "--length", "0")
    assert trained.returncode == 0, trained.stderr
    sampled = charlm("sample", "--run", run, "--length", "300", "--seed", "1", "--json",
                     "--temperatures", "0,1")
    assert sampled.returncode == 0, sampled.stderr
    result = json.loads(sampled.stdout)
    index = index_for(load_corpus(tiny_corpus_path, lowercase=True))
    assert set(result["memorization"]) == set(result["samples"]) == {"0.0", "1.0"}
    for temperature, sample in result["samples"].items():
        assert result["memorization"][temperature] == index.measure(sample).as_json()
        assert set(result["memorization"][temperature]) == {"copied_20gram_share", "longest_copied"}

    tiny_corpus_path.unlink()  # the training text is gone: the samples come with a note instead
    sampled = charlm("sample", "--run", run, "--length", "30", "--json")
    assert sampled.returncode == 0, sampled.stderr
    result = json.loads(sampled.stdout)
    assert "memorization" not in result
    assert result["memorization_note"] == ("the training text is not on this machine, so the samples were "
                                           "not checked for copied text")


@pytest.mark.parametrize("args, message", [
    (["train", "--corpus", "/nonexistent/file.txt"], "no such file"),
    (["train", "--units", "0"], "--units"),
    (["sample", "--run", "/nonexistent/run"], "no such run directory"),
])
def test_bad_input_is_one_clear_line_and_a_nonzero_exit(args, message, tmp_path):
    out = charlm(*args, cwd=tmp_path)
    assert out.returncode != 0
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.trains
def test_sample_refuses_unknown_seed_characters(tiny_corpus_path, tmp_path):
    run = tmp_path / "run"
    trained = charlm("train", "--corpus", tiny_corpus_path, "--run", run, *TINY,
                     "--steps", "1", "--length", "0")
    assert trained.returncode == 0
    assert "Step limit reached at step 1 (epoch 1, 1 of " in trained.stdout  # not "epoch 0"
    out = charlm("sample", "--run", run, "--seed-text", "\u2603 snowman")
    assert out.returncode == 2 and "'\u2603'" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
@pytest.mark.trains
def test_signals_stop_with_a_checkpoint_and_a_clean_exit(signum, code, tiny_corpus_path, tmp_path):
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "tui.cli", "train", "--corpus", str(tiny_corpus_path),
                                "--run", str(run), *TINY, "--epochs", "100000", "--length", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr
    assert (run / "model.keras").exists() and "checkpoint saved" in stdout


def test_no_train_on_a_folder_that_is_not_a_run_is_refused_and_writes_nothing(tmp_path, capsys):
    from tui.cli import main

    (tmp_path / "notes.txt").write_text("mine")
    assert main(["--run", str(tmp_path), "--no-train"]) == 1
    assert "is not a charlm-tui run directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
