"""Files outside the run directory that charlm-tui reads or writes: a --seed-file and the
recent corpora ($XDG_CACHE_HOME/charlm-tui/recent.json). Each is read only as a regular
file (a FIFO would hang the command or freeze the app, a link to /dev/zero fill its
memory), with a size cap, never through a link; recent.json is written atomically through
an O_EXCL temporary, never through a link planted at the temporary's name. Real FIFOs,
real links, real processes (with a deadline and a memory limit, so that a regression
fails rather than hangs or swaps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ptyrun import charlm_command, run_in_pty
from tui import recent


def recent_in_a_process(cache_home: Path, code: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
    """Run `code` (with tui.recent imported) in a process of its own with this cache home,
    at most 1 GiB of memory and `timeout` seconds."""
    limit = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
             "from tui.recent import add_recent, load_recent, recent_path\n")
    return subprocess.run([sys.executable, "-c", limit + code], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "XDG_CACHE_HOME": str(cache_home)},
                          cwd=Path(__file__).parents[1])


@pytest.fixture
def recent_file(private_cache_home) -> Path:
    path = private_cache_home / "charlm-tui" / "recent.json"
    path.parent.mkdir(parents=True)
    return path


def test_every_test_has_its_own_cache_home(tmp_path):
    assert recent.recent_path().is_relative_to(tmp_path), "a test would read or write the user's recent.json"


def test_a_fifo_as_recent_json_is_not_opened(recent_file):
    os.mkfifo(recent_file)
    out = recent_in_a_process(recent_file.parents[1], "print(load_recent()); add_recent('/corpora/a.txt'); "
                                                      "print(load_recent())")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "['/corpora/a.txt']"]  # replaced by a list, atomically
    assert recent_file.is_file() and not recent_file.is_symlink()


def test_recent_json_linked_to_dev_zero_is_not_read(recent_file):
    recent_file.symlink_to("/dev/zero")
    out = recent_in_a_process(recent_file.parents[1], "print(load_recent())")
    assert (out.returncode, out.stdout.strip()) == (0, "[]"), out.stderr[-500:]


def test_recent_json_is_never_read_through_a_link(recent_file, tmp_path):
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(["/secret/corpus.txt"]), encoding="utf-8")
    recent_file.symlink_to(elsewhere)
    assert recent.load_recent() == []
    recent.add_recent("/corpora/b.txt")  # replaces the link itself, never its target
    assert json.loads(elsewhere.read_text(encoding="utf-8")) == ["/secret/corpus.txt"]
    assert not recent_file.is_symlink() and recent.load_recent() == ["/corpora/b.txt"]


def test_a_huge_recent_json_is_not_read(recent_file):
    recent_file.write_text(json.dumps([f"/corpora/{n}.txt" for n in range(100_000)]), encoding="utf-8")
    assert recent_file.stat().st_size > 1 << 20  # ten entries are a few KB: this is no list of ours
    assert recent.load_recent() == []


def test_a_link_planted_at_the_temporary_name_is_not_written_through(recent_file, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    (recent_file.parent / f".recent.json.tmp-{os.getpid()}").symlink_to(victim)
    recent.add_recent("/corpora/c.txt")
    assert victim.read_text(encoding="utf-8") == "precious"
    assert recent.load_recent() == ["/corpora/c.txt"]


# -- --seed-file, in a terminal -------------------------------------------------------------
@pytest.mark.parametrize("kind", ["fifo", "link", "dev-zero", "huge"])
def test_a_seed_file_that_is_not_a_small_regular_file_is_refused_at_once(kind, tmp_path):
    seed = tmp_path / "seed.txt"
    if kind == "fifo":
        os.mkfifo(seed)
    elif kind == "link":
        (tmp_path / "real.txt").write_text("ROMEO:\n", encoding="utf-8")
        seed.symlink_to(tmp_path / "real.txt")
    elif kind == "dev-zero":
        seed.symlink_to("/dev/zero")
    else:
        seed.write_bytes(b"a" * 200_000)
    result = run_in_pty([*charlm_command(), "sample", "--run", str(tmp_path / "run"), "--seed-file",
                         str(seed)], timeout=30)
    assert result.code == 1, result.text  # (None: it hung until the deadline)
    expected = {"fifo": "is a FIFO, not a regular file", "link": "is a symbolic link, not a regular file",
                "dev-zero": "is a symbolic link, not a regular file", "huge": "is over 100,000 bytes"}[kind]
    lines = result.text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"charlm-tui: error: --seed-file {seed} ") \
        and expected in lines[0], result.text
