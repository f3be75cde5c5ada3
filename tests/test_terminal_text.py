"""Text from a corpus or a run directory never reaches a terminal raw (tui/visible.py).

A corpus (and so the excerpts config.json keeps, and what the model learns to write), a
corpus file's name and a run directory's name hold terminal commands here: ESC [ 2 J
(clear the screen), OSC 0 (the window title), OSC 52 (write the clipboard), OSC 8 (a
link), BEL, DEL and C1 CSI. `sample`, `train` and the app run in a real pseudo-terminal
(and `sample` in tmux, whose window title they would change), and what reaches the
terminal holds none of them, only their visible pictures (␛ for ESC).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from engine.files import checkpoints
from tests.conftest import tiny_text
from tests.ptyrun import charlm_command, run_in_pty
from tui.visible import restore_controls, visible, visible_line

CLEAR_SCREEN = "\x1b[2J"
WINDOW_TITLE = "\x1b]0;pwned\x07"
CLIPBOARD = "\x1b]52;c;cHduZWQ=\x07"
LINK = "\x1b]8;;http://evil.example/\x1b\\link\x1b]8;;\x1b\\"
C1_CSI = "\x9b2J"
PAYLOADS = (CLEAR_SCREEN, WINDOW_TITLE, CLIPBOARD, LINK, C1_CSI, "\x7f")
TINY = ["--units", "8", "--maxlen", "16", "--step", "8", "--batch-size", "16"]


def hostile_text(chars: int = 6000) -> str:
    """Pseudo-English with a terminal command after every sentence."""
    sentences = tiny_text(chars).split("\n")
    return "".join(sentence + PAYLOADS[i % len(PAYLOADS)] + "\n" for i, sentence in enumerate(sentences))


def assert_no_corpus_command(output: bytes) -> None:
    """Nothing the corpus holds reached the terminal as a command (a program's own
    styling, e.g. Textual's, may use CSI sequences: those are not looked for; nor is
    Textual's OSC 22, the mouse pointer's shape, ended by BEL)."""
    text = re.sub("\x1b]22;[a-z-]*\x07", "", output.decode("utf-8", "replace"))
    for raw in ("\x1b]0;pwned", "\x1b]52;", "\x1b]8;;http", "\x07", "\x7f"):
        assert raw not in text, f"{raw!r} reached the terminal"
    assert not any(0x80 <= ord(ch) <= 0x9F for ch in text), "a C1 control reached the terminal"


def assert_no_escape_at_all(output: bytes) -> None:
    """For a command that writes plain text: not one ESC or BEL."""
    assert_no_corpus_command(output)
    assert b"\x1b" not in output, output[max(0, output.find(b"\x1b") - 40):output.find(b"\x1b") + 40]


# -- the function ------------------------------------------------------------------------------
def test_control_characters_are_shown_as_pictures_and_newlines_and_tabs_kept():
    assert visible("a\x1b[2Jb") == "a␛[2Jb"
    assert visible(WINDOW_TITLE) == "␛]0;pwned␇"
    assert visible("\x00\x08\x0d\x7f") == "␀␈␍␡"
    assert visible("\x9b2J\x9d") == "␛[2J␛]"  # C1: ESC and the character 0x40 below
    assert visible("line\n\tindented") == "line\n\tindented"
    assert visible("\udcff") == "\ufffd"  # a file name that is not UTF-8 can still be printed
    assert visible("plain text, ünïcödé, 日本") == "plain text, ünïcödé, 日本"
    assert visible_line("two\nlines\ttab\x1b") == "two⏎lines tab␛"
    # Trojan Source: what draws nothing yet reorders or breaks the rest of the line
    assert (visible("abc\u202edcba\u2066x\u2069\u200b\u2028")
            == "abc⟨U+202E⟩dcba⟨U+2066⟩x⟨U+2069⟩⟨U+200B⟩⟨U+2028⟩")
    shown = visible("".join(map(chr, range(0x20))) + "\x7f" + "".join(map(chr, range(0x80, 0xA0))))
    assert all(ch in "\n\t" or ch.isprintable() for ch in shown)


def test_pictures_go_back_to_the_control_characters_the_model_knows():
    assert restore_controls(visible("a\x0cb\x1bc"), {"\x0c"}.__contains__) == "a\x0cb␛c"


# -- a run made from a hostile corpus -------------------------------------------------------------
@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """(folder, corpus file, run directory) with commands in the corpus, in the excerpts
    config.json keeps for seed texts, and in both names."""
    from engine.config import preset
    from engine.data.corpus import load_corpus
    from engine.files.rundir import RunDir
    from engine.modeling.model import build_model

    folder = tmp_path_factory.mktemp("hostile")
    corpus_path = folder / f"evil{WINDOW_TITLE}.txt"
    corpus_path.write_text(hostile_text(), encoding="utf-8")
    corpus = load_corpus(corpus_path, lowercase=False)
    run_dir = folder / f"run{CLEAR_SCREEN}"
    config = preset("fast", units=8, maxlen=16, step=8, batch_size=16, epochs=1, sample_length=60)
    run = RunDir(run_dir)
    run.create()
    excerpts = ["".join(PAYLOADS) + " the will to power", "truth is a woman" + WINDOW_TITLE]
    run.write_config(config, {"name": corpus.name, "source": str(corpus_path), "chars": len(corpus),
                              "vocab_size": len(corpus.vocab), "excerpts": excerpts})
    run.write_vocab(corpus.vocab)
    model = build_model(len(corpus.vocab), config)
    weights = model.get_weights()
    # The output bias at the corpus's log character frequencies: the model writes the
    # corpus's control characters as often as the corpus holds them.
    counts = np.bincount(corpus.ids, minlength=len(corpus.vocab)) + 1.0
    weights[-1] = np.log(counts / counts.sum()).astype(weights[-1].dtype)
    model.set_weights(weights)
    checkpoints.save_model(run, model)
    return folder, corpus_path, run_dir


@pytest.mark.trains
def test_sample_shows_the_corpus_control_characters_in_a_terminal(hostile_run):
    _, _, run_dir = hostile_run
    result = run_in_pty([*charlm_command(), "sample", "--run", str(run_dir), "--length", "400", "--seed", "1",
                         "--temperatures", "1.0,1.2", "--num-samples", "2"], timeout=60)
    assert result.code == 0, result.text
    assert_no_escape_at_all(result.output)
    assert "␛]0;pwned␇" in result.text  # the seed text: an excerpt, shown as text
    assert "run␛[2J" in result.text      # the checkpoint line names the run directory
    generated = result.text.split("----- temperature: 1.2", 1)[1]
    assert any(picture in generated for picture in "␛␇␡"), "the model wrote no control character"


@pytest.mark.trains
def test_an_error_naming_a_hostile_file_is_shown_as_text(hostile_run, tmp_path):
    missing = tmp_path / f"nothing{WINDOW_TITLE}"
    result = run_in_pty([*charlm_command(), "sample", "--run", str(missing)], timeout=30)
    assert result.code == 1, result.text
    assert_no_escape_at_all(result.output)
    assert "charlm-tui: error: no such run directory:" in result.text
    assert "nothing␛]0;pwned␇" in result.text
    fifo = tmp_path / f"seed{CLIPBOARD}"
    os.mkfifo(fifo)
    refused = run_in_pty([*charlm_command(), "sample", "--run", str(hostile_run[2]), "--seed-file",
                          str(fifo)], timeout=30)
    assert refused.code == 1, refused.text
    assert_no_escape_at_all(refused.output)
    assert "is a FIFO, not a regular file" in refused.text


@pytest.mark.trains
def test_train_dry_run_shows_hostile_names_as_text(hostile_run, tmp_path):
    _, corpus_path, _ = hostile_run
    result = run_in_pty([*charlm_command(), "train", "--corpus", str(corpus_path), "--run",
                         str(tmp_path / f"new{CLIPBOARD}"), *TINY, "--dry-run"], timeout=60)
    assert result.code == 0, result.text
    assert_no_corpus_command(result.output)
    assert "Corpus: evil␛]0;pwned␇" in result.text
    assert "Run directory: " in result.text and "new␛]52;c;cHduZWQ=␇" in result.text


@pytest.mark.trains
def test_train_prints_its_samples_as_text_in_a_terminal(hostile_run, tmp_path):
    _, corpus_path, _ = hostile_run
    # TTY_COMPATIBLE=0: rich leaves its progress bar (and colours) off, so every ESC in
    # what reaches the terminal would be the corpus's; the bar itself prints no text from
    # the corpus (tests/test_terminal.py drives train with its bar on a hostile corpus).
    result = run_in_pty([*charlm_command(), "train", "--corpus", str(corpus_path), "--run",
                         str(tmp_path / f"run{WINDOW_TITLE}"), *TINY, "--epochs", "1", "--length", "200"],
                        env={"TTY_COMPATIBLE": "0"}, timeout=180)
    assert result.code == 0, result.text
    assert "--- Generating with seed:" in result.text and "----- temperature: 1.2" in result.text
    assert_no_escape_at_all(result.output)
    assert "Training on" in result.text and "run␛]0;pwned␇" in result.text
    samples = result.text.split("--- Generating with seed:", 1)[1]
    assert any(picture in samples for picture in "␛␇␡")
    written = (tmp_path / f"run{WINDOW_TITLE}" / "samples" / "epoch-0001.txt").read_text(encoding="utf-8")
    assert "\x1b" in written  # the files keep the text as generated


@pytest.mark.trains
def test_the_app_shows_a_hostile_run_as_text(hostile_run):
    _, _, run_dir = hostile_run
    # The seed editor opens with the round's seed, applied as it is (Ctrl+S), then q.
    result = run_in_pty([*charlm_command(), "--run", str(run_dir), "--no-train", "--seed", "1"],
                        send=[(b"round 1", b"e"), (b"Ctrl+S", b"\x13"), (b"your seed text", b"q")],
                        timeout=90)
    assert result.code == 0, result.text[-2000:]
    assert_no_corpus_command(result.output)
    assert "␛]0;pwned␇" in result.text  # the header's corpus name


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")
@pytest.mark.trains
def test_sample_leaves_the_window_title_and_the_screen_alone_in_tmux(hostile_run, tmp_path):
    _, _, run_dir = hostile_run
    tmux = ["tmux", "-S", str(tmp_path / "tmux.sock")]
    name = f"charlm-{uuid.uuid4().hex[:8]}"
    done = tmp_path / "exit-code"
    command = (f"{' '.join(map(_quote, charlm_command()))} sample --run {_quote(str(run_dir))} --length 300 "
               f"--seed 2; echo $? > {_quote(str(done))}; sleep 60")
    subprocess.run([*tmux, "new-session", "-d", "-s", name, "-x", "200", "-y", "50", command], check=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        title_before = _tmux_out(tmux, "display-message", "-p", "-t", name, "#{pane_title}")
        deadline = time.monotonic() + 60
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        screen = _tmux_out(tmux, "capture-pane", "-p", "-t", name)
        assert done.exists() and done.read_text().strip() == "0", screen
        assert _tmux_out(tmux, "display-message", "-p", "-t", name, "#{pane_title}") == title_before
        screen = _tmux_out(tmux, "capture-pane", "-p", "-S", "-200", "-t", name)
        assert "--- Checkpoint:" in screen, screen  # the first line is still there: no ESC [ 2 J
        assert "␛]0;pwned␇" in screen
        buffers = _tmux_out(tmux, "list-buffers")
        assert "pwned" not in buffers  # OSC 52 would have put it on tmux's clipboard
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


def _tmux_out(tmux: list[str], *args: str) -> str:
    return subprocess.run([*tmux, *args], capture_output=True, text=True).stdout.strip()


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


@pytest.mark.trains
def test_sample_json_escapes_every_control_character(hostile_run):
    _, _, run_dir = hostile_run
    result = run_in_pty([*charlm_command(), "sample", "--run", str(run_dir), "--length", "100", "--seed", "1",
                         "--json"], timeout=60)
    assert result.code == 0, result.text
    assert_no_escape_at_all(result.output)
    data = json.loads(result.text.strip().splitlines()[-1])
    assert "\x1b" in data["seed_text"]  # JSON keeps the text as it is, escaped: \u001b
    assert Path(data["checkpoint"]).name == "model.keras"
