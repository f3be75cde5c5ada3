"""The memorization check measures samples against the very text a run was trained on.

A run records its corpus's absolute path and a fingerprint (size on disk and a digest of
the text, engine/data/corpus.py corpus_notes); engine/data/trainingtext.py training_text uses a text only
when both match, and says why not in `memorization_note` otherwise. The issue's case: a
run trained on `corp/shk.txt` (typed relative), checked from another folder holding
another `corp/shk.txt`, reported the other text's figures.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import tiny_text
from tests.ptyrun import charlm_command

TINY = ["--units", "8", "--maxlen", "16", "--step", "8", "--batch-size", "16"]


@pytest.fixture(scope="module")
def trained_from_a_folder(tmp_path_factory):
    """(the folder, its corp/shk.txt's text, the run) trained from inside that folder on the
    relative path corp/shk.txt, as the issue's user did."""
    folder = tmp_path_factory.mktemp("first-folder")
    (folder / "corp").mkdir()
    text = tiny_text(6000, seed=1)
    (folder / "corp" / "shk.txt").write_text(text, encoding="utf-8")
    out = subprocess.run([*charlm_command(), "train", "--corpus", "corp/shk.txt", "--run", "run", *TINY,
                          "--steps", "2", "--length", "0"], cwd=folder, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return folder, text, folder / "run"


def report(run_dir: Path, sample: str) -> dict:
    from engine.run.follow import read_run
    from tui.memorization import memorization_report

    return memorization_report(read_run(run_dir), {"1.0": sample})


def copied_from(text: str) -> str:
    return text[1000:1400]


def crafted_copy(run_dir: Path, tmp_path: Path, **corpus_changes) -> Path:
    """A copy of the run whose config.json says other things of its corpus."""
    copy = tmp_path / "run-copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns(".lock"))
    config = json.loads((copy / "config.json").read_text(encoding="utf-8"))
    for key, value in corpus_changes.items():
        if value is None:
            config["corpus"].pop(key, None)
        else:
            config["corpus"][key] = value
    (copy / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return copy


@pytest.mark.trains
def test_the_run_records_the_absolute_path_and_a_fingerprint(trained_from_a_folder):
    folder, text, run_dir = trained_from_a_folder
    corpus = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))["corpus"]
    assert corpus["path"] == str(folder / "corp" / "shk.txt")
    assert corpus["fingerprint"]["bytes"] == len(text.encode("utf-8"))
    assert len(corpus["fingerprint"]["sha256"]) == 64


def test_another_folder_with_a_file_of_the_same_name_changes_nothing(trained_from_a_folder, tmp_path,
                                                                      monkeypatch):
    _, text, run_dir = trained_from_a_folder
    (tmp_path / "corp").mkdir()
    (tmp_path / "corp" / "shk.txt").write_text(tiny_text(6000, seed=2), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    measured = report(run_dir, copied_from(text))["memorization"]["1.0"]
    assert measured == {"copied_20gram_share": 1.0, "longest_copied": 400}  # measured against its own text
    monkeypatch.chdir(tmp_path / "corp")  # a folder with no corp/shk.txt at all
    assert report(run_dir, copied_from(text))["memorization"]["1.0"]["copied_20gram_share"] == 1.0


def test_a_training_text_changed_since_is_not_used(trained_from_a_folder, tmp_path):
    _, text, run_dir = trained_from_a_folder
    same_size = tmp_path / "shk.txt"
    same_size.write_text(text[:2000] + text[2000:4000].swapcase() + text[4000:], encoding="utf-8")
    note = report(crafted_copy(run_dir, tmp_path, path=str(same_size)), copied_from(text))
    assert "memorization" not in note
    assert note["memorization_note"] == (f"{same_size} is no longer the text the run was trained on (it "
                                         "changed since), so the samples were not checked for copied text")


def rchar() -> int:
    """Bytes this process has read so far (Linux's /proc/self/io)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_a_crafted_source_does_not_make_it_read_another_file(trained_from_a_folder, tmp_path):
    _, text, run_dir = trained_from_a_folder
    big = tmp_path / "big.txt"
    big.write_text("the will to power\n" * 2_000_000, encoding="utf-8")  # 36 MB of text
    crafted = crafted_copy(run_dir, tmp_path, source=str(big), path=str(big))
    before = rchar()
    note = report(crafted, copied_from(text))
    assert rchar() - before < 4 << 20, "it read the crafted file"
    assert note["memorization_note"] == (f"{big} holds {big.stat().st_size:,} bytes, not the "
                                         f"{len(text.encode('utf-8')):,} the run was trained on (it changed "
                                         "since), so the samples were not checked for copied text")
    fifo = tmp_path / "fifo"
    import os

    os.mkfifo(fifo)
    assert report(crafted_copy(run_dir, tmp_path / "2", path=str(fifo)), copied_from(text)) == {
        "memorization_note": f"{fifo} is not a regular file, so the samples were not checked for copied text"}


def test_a_run_without_a_fingerprint_says_why_it_is_not_checked(trained_from_a_folder, tmp_path, monkeypatch):
    folder, text, run_dir = trained_from_a_folder
    older = crafted_copy(run_dir, tmp_path, path=None, fingerprint=None, source="corp/shk.txt")
    monkeypatch.chdir(folder)  # where its relative source names the right file, even
    note = report(older, copied_from(text))
    assert "memorization" not in note
    assert "without a fingerprint of its training text" in note["memorization_note"]


def test_sample_json_carries_the_reason(trained_from_a_folder, tmp_path):
    _, text, run_dir = trained_from_a_folder
    grown = tmp_path / "shk.txt"
    grown.write_text(text + "more\n", encoding="utf-8")
    crafted = crafted_copy(run_dir, tmp_path, path=str(grown))
    out = subprocess.run([*charlm_command(), "sample", "--run", str(crafted), "--length", "40", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert "memorization" not in result
    assert result["memorization_note"].startswith(
        f"{grown} holds {len(text) + 5:,} bytes, not the {len(text):,}")
