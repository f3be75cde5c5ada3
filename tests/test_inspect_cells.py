"""`charlm-tui inspect` and `charlm-tui cells` on a real tiny trained run, as a user runs
them: real processes (no TensorFlow imported), exact against the Keras model, bad input
refused in one line, and the coloured output in a pseudo-terminal with the text's control
characters made visible."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest

from engine.modeling.cellstats import PROPERTIES, text_properties
from engine.modeling.sampler import reweight_distribution
from tests.conftest import tiny_config, tiny_text

pytestmark = pytest.mark.trains  # trains a tiny model or loads one with Keras: `make test-fast` leaves it out

ROOT = Path(__file__).resolve().parents[1]
# Quotes, brackets and capitals for the properties to vary, and control characters a
# terminal would obey (a title-setting OSC sequence, BEL, a colour code) that must never
# reach it raw.
HOSTILE = "\x1b]0;pwned\x07"
SGR_FROM_TEXT = "\x1b[31m"


def corpus_text() -> str:
    lines = tiny_text(7000).splitlines(keepends=True)
    decorated = []
    for number, line in enumerate(lines):
        if number % 3 == 0:
            line = f'"{line[:-2]}" (said he).\n'
        if number % 5 == 0:
            line = f"{HOSTILE}\t{SGR_FROM_TEXT}{line}"
        decorated.append(line)
    return "".join(decorated)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A run trained for one epoch by the engine's Trainer, its corpus, and its Keras model."""
    from engine.data.corpus import load_corpus
    from engine.run.training import Trainer
    from engine.tfsetup import keras

    folder = tmp_path_factory.mktemp("inspect")
    corpus_path = folder / "tiny.txt"
    corpus_path.write_text(corpus_text(), encoding="utf-8")
    run = folder / "run"
    Trainer(load_corpus(corpus_path, lowercase=False), tiny_config(units=8, lowercase=False), run,
            sample_each_epoch=False).run()
    model = keras().saving.load_model(run / "model.keras", compile=False)
    vocab = json.loads((run / "vocab.json").read_text())["vocab"]
    return {"run": run, "corpus": corpus_path, "model": model, "vocab": vocab, "folder": folder}


# The command, saying on its last line of stderr, from an exit handler, whether it imported TensorFlow.
REPORTING_IMPORTS = (
    "import atexit, runpy, sys\n"
    "atexit.register(lambda: print('tensorflow imported:', 'tensorflow' in sys.modules, file=sys.stderr))\n"
    "sys.argv[0] = 'charlm-tui'\n"
    "runpy.run_module('tui.cli', run_name='__main__', alter_sys=True)\n")


def charlm(*args, env=None, timeout=120) -> subprocess.CompletedProcess:
    """`charlm-tui ARGS`; asserts it did not import TensorFlow, and drops that report line."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    out = subprocess.run([sys.executable, "-c", REPORTING_IMPORTS, *map(str, args)], capture_output=True,
                         text=True, timeout=timeout, env=environment, cwd=ROOT)
    *lines, report = out.stderr.splitlines() or [""]
    assert report == "tensorflow imported: False", out.stderr
    out.stderr = "\n".join(lines)
    return out


def keras_next(trained, context: str) -> np.ndarray:
    ids = np.array([[trained["vocab"].index(char) for char in context]], dtype="int32")
    return trained["model"].predict(ids, verbose=0)[0][-1].astype(np.float64)


def keras_h(trained, text: str) -> np.ndarray:
    """h after every character, from Keras (the run's LSTM returns its whole sequence)."""
    from engine.tfsetup import keras

    ids = np.array([[trained["vocab"].index(char) for char in text]], dtype="int32")
    lstm = keras().Model(trained["model"].inputs, trained["model"].get_layer("lstm_1").output)
    return lstm.predict(ids, verbose=0)[0]


# -- inspect ----------------------------------------------------------------------------------
def test_inspect_json_is_the_keras_models_distribution_at_every_temperature(trained):
    out = charlm("inspect", "--run", trained["run"], "--text", r'Truth is\n"the wi', "--top", "1000",
                 "--temperatures", "0.2,0.5,1.2", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    context = 'Truth is\n"the wi'  # \n read as `sample --seed-text` reads it
    assert result["context"] == context
    assert list(result["top"]) == list(result["entropy_bits"]) == ["1.0", "0.2", "0.5", "1.2"]
    expected = keras_next(trained, context)
    for written, top in result["top"].items():
        keras_probabilities = reweight_distribution(expected, float(written))
        assert len(top) == len(trained["vocab"]) and all(len(pair) == 2 for pair in top)
        assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
        for char, probability in top:
            assert probability == pytest.approx(keras_probabilities[trained["vocab"].index(char)], abs=1e-5)
        positive = keras_probabilities[keras_probabilities > 0]
        entropy = -(positive * np.log2(positive)).sum()
        assert result["entropy_bits"][written] == pytest.approx(entropy, abs=1e-4)
    assert result["entropy_bits"]["0.2"] < result["entropy_bits"]["1.0"] < result["entropy_bits"]["1.2"]


def test_inspect_keys_temperatures_as_written_and_prints_a_table(trained):
    out = charlm("inspect", "--run", trained["run"], "--text", "the will", "--top", "3",
                 "--temperatures", "0.5,1", "--json")
    result = json.loads(out.stdout)
    assert list(result["top"]) == ["0.5", "1"] and all(len(top) == 3 for top in result["top"].values())
    from_best = charlm("inspect", "--run", trained["run"], "--text", "the will", "--checkpoint", "best",
                       "--json")
    assert from_best.returncode == 0, from_best.stderr
    assert json.loads(from_best.stdout)["checkpoint"] == "best"
    table = charlm("inspect", "--run", trained["run"], "--text", "the will", "--top", "4")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert "  'the will'" in lines
    header = next(line for line in lines if "T=1.0" in line)
    assert [name for name in header.split() if name.startswith("T=")] == ["T=0.2", "T=0.5", "T=1.0", "T=1.2"]
    best = json.loads(charlm("inspect", "--run", trained["run"], "--text", "the will", "--json").stdout)
    first_row = next(line for line in lines if line.strip().startswith("1 "))
    _, probability = best["top"]["1.0"][0]
    assert f"{probability:.1%}" in first_row and table.stdout.count(" bits") == 4


# -- cells ------------------------------------------------------------------------------------
def test_cells_json_ranks_every_cell_for_every_property(trained):
    out = charlm("cells", "--run", trained["run"], "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["layer"], result["layers"], result["cells"]) == (1, 1, 8)
    assert result["source"] == "the held-out text of tiny" and 0 < result["chars"] <= 10_000
    assert list(result["properties"]) == list(PROPERTIES)
    for name, scores in result["properties"].items():
        assert sorted(score["cell"] for score in scores) == list(range(8)), name
        assert all(set(score) == {"cell", "r", "activation"} and score["activation"] in ("c", "h")
                   for score in scores)
        assert [abs(s["r"]) for s in scores] == sorted((abs(s["r"]) for s in scores), reverse=True)


def test_a_cells_values_are_kerass_and_its_r_is_pearsons(trained):
    out = charlm("cells", "--run", trained["run"], "--cell", "5", "--activation", "h", "--chars", "800",
                 "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    text, values = result["text"], np.array(result["values"])
    assert len(text) == len(values) == result["chars"] == 800
    corpus = trained["corpus"].read_text()
    assert corpus[corpus.index(text) - 1] == "\n"  # the held-out text from a line start
    np.testing.assert_allclose(values, keras_h(trained, text)[:, 5], atol=1e-5)
    properties = text_properties(text)
    for name, r in result["r"].items():
        expected = np.corrcoef(values, properties[name])[0, 1] if np.ptp(properties[name]) else 0.0
        assert r == pytest.approx(expected, abs=1e-9), name
    ranking = json.loads(charlm("cells", "--run", trained["run"], "--chars", "800", "--json").stdout)
    for name, scores in ranking["properties"].items():
        mine = next(score for score in scores if score["cell"] == 5)
        assert abs(mine["r"]) >= abs(result["r"][name]) - 1e-12  # the better of c and h is listed


def test_cells_over_a_text_file_prints_each_propertys_best_cells(trained, tmp_path):
    text_file = tmp_path / "excerpt.txt"
    text_file.write_bytes(corpus_text()[:3000].replace("\n", "\r\n").encode())  # CRLF: read as \n
    out = charlm("cells", "--run", trained["run"], "--text-file", text_file, "--top", "3")
    assert out.returncode == 0, out.stderr
    assert "over 3,000 characters of" in out.stdout.replace("\n", " ")
    for name in PROPERTIES:
        row = next(line for line in out.stdout.splitlines() if line.startswith(name))
        assert len(re.findall(r"[+-]\d\.\d\d \d[ch]", row)) == 3, row
    assert "\x1b" not in out.stdout and "\x07" not in out.stdout


# -- refusals ---------------------------------------------------------------------------------
def refusal(*args, env=None) -> str:
    out = charlm(*args, env=env, timeout=30)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charlm-tui: error: "), out.stderr
    return lines[0]


def test_bad_input_is_refused_in_one_sentence(trained, tmp_path):
    run = trained["run"]
    assert "--text has characters the model does not know: '\u2603'" in refusal(
        "inspect", "--run", run, "--text", "snow\u2603")
    assert "--cell must be from 0 to 7" in refusal("cells", "--run", run, "--cell", "8")
    assert "--layer must be from 1 to 1" in refusal("cells", "--run", run, "--layer", "2")
    for args, message in ((["cells", "--chars", "0"], "--chars: must be a whole number from 1 to 100,000"),
                          (["inspect", "--text", "a", "--temperatures", "1,1.0"], "each temperature once")):
        out = charlm(*args, "--run", run)
        assert out.returncode == 2 and message in out.stderr.splitlines()[-1], out.stderr
    no_checkpoint = tmp_path / "no-checkpoint"
    no_checkpoint.mkdir()
    for name in ("config.json", "vocab.json"):
        shutil.copy(run / name, no_checkpoint / name)
    assert "has no checkpoint" in refusal("inspect", "--run", no_checkpoint, "--text", "the")
    assert "has no checkpoint" in refusal("cells", "--run", no_checkpoint)


def test_a_text_file_must_be_a_regular_utf8_file_the_model_can_read(trained, tmp_path):
    run = trained["run"]
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    assert "is not a regular file" in refusal("cells", "--run", run, "--text-file", fifo)  # never waits
    assert time.monotonic() - started < 30
    assert "is not a regular file" in refusal("cells", "--run", run, "--text-file", tmp_path)
    assert "No such file" in refusal("cells", "--run", run, "--text-file", tmp_path / "missing.txt")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait".encode("latin-1"))
    assert "is not UTF-8 text" in refusal("cells", "--run", run, "--text-file", latin1)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert "is empty" in refusal("cells", "--run", run, "--text-file", empty)
    unknown = tmp_path / "snow.txt"
    unknown.write_text("the will \u2603\n")
    message = refusal("cells", "--run", run, "--text-file", unknown)
    assert "characters the model does not know: '\u2603'" in message


def test_without_the_training_text_cells_asks_for_a_text_file(trained, tmp_path):
    moved = tmp_path / "elsewhere.txt"
    no_corpora = tmp_path / "corpora"
    no_corpora.mkdir()
    trained["corpus"].rename(moved)
    try:
        message = refusal("cells", "--run", trained["run"], env={"CHARLM_CORPORA": str(no_corpora)})
    finally:
        moved.rename(trained["corpus"])
    assert "is not on this machine" in message and "--text-file" in message


# -- in a terminal ----------------------------------------------------------------------------
def in_terminal(*args, env: dict, columns: int = 80, timeout: float = 60) -> tuple[int, str]:
    """Run `charlm-tui ARGS` in a pseudo-terminal of `columns`; (exit code, what it wrote)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command, its terminal the pty
        os.chdir(ROOT)
        os.execve(sys.executable, [sys.executable, "-m", "tui.cli", *map(str, args)],
                  {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env})
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    output, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 1 << 16)
        except OSError:  # EIO: the command ended and closed its side
            break
        if not chunk:
            break
        output += chunk
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode("utf-8", errors="replace")


RICH_STYLE = re.compile(r"\x1b\[[0-9;]*m")


def test_a_cell_is_coloured_in_a_terminal_and_the_texts_control_characters_are_shown_not_obeyed(trained):
    code, output = in_terminal("cells", "--run", trained["run"], "--cell", "2", "--chars", "2000",
                               env={"TERM": "xterm-256color", "COLORTERM": "truecolor"})
    assert code == 0, output
    assert re.search(r"\x1b\[30;48;2;\d+;\d+;\d+m", output)  # true-colour backgrounds
    plain = RICH_STYLE.sub("", output)
    assert "\x1b" not in plain and "\x07" not in plain  # nothing of the text's own escapes is left raw
    assert "␛]0;pwned␇" in plain and "␛[31m" in plain and "\u2192" in plain  # shown, visibly
    assert "Cell 2 (tanh(c))" in plain and "position in line" in plain


def test_without_colour_a_cell_is_marked_under_each_line(trained):
    code, output = in_terminal("cells", "--run", trained["run"], "--cell", "2", "--chars", "600",
                               env={"TERM": "xterm-256color", "NO_COLOR": "1"}, columns=60)
    assert code == 0, output
    assert not RICH_STYLE.search(output) and "\x07" not in output and "\x1b" not in output
    lines = output.replace("\r\n", "\n").splitlines()
    text_lines = [number for number, line in enumerate(lines) if line.endswith("\u21b5")]
    assert len(text_lines) > 5
    for number in text_lines:
        line, marks = lines[number], lines[number + 1]
        assert len(line) <= 60 and set(marks) <= set("=-+# ") and len(marks) <= len(line)


def test_inspect_in_a_terminal_shows_the_table(trained):
    code, output = in_terminal("inspect", "--run", trained["run"], "--text", '"the will',
                               env={"TERM": "xterm"})
    assert code == 0, output
    plain = RICH_STYLE.sub("", output)
    assert "T=1.0" in plain and "bits" in plain and "\x1b" not in plain


def test_a_terminal_that_goes_away_ends_the_command_quietly(trained, tmp_path):
    """Under nohup (SIGHUP ignored) every write to a closed terminal fails with EIO."""
    errors = tmp_path / "stderr.txt"
    pid, fd = pty.fork()
    if pid == 0:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        os.dup2(os.open(errors, os.O_WRONLY | os.O_CREAT, 0o600), 2)
        os.chdir(ROOT)
        os.execve(sys.executable, [sys.executable, "-m", "tui.cli", "cells", "--run", str(trained["run"]),
                                   "--cell", "2", "--chars", "5000"],
                  {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor",
                   "TF_CPP_MIN_LOG_LEVEL": "3"})
    started = b""
    while b"Cell 2" not in started:
        started += os.read(fd, 1024)
    os.close(fd)  # the terminal goes; 5,000 coloured characters are still to be written
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1
    assert errors.read_text() == ""


def test_a_reader_that_stops_reading_ends_the_command_quietly(trained):
    for args in (["cells", "--cell", "2", "--json"], ["cells", "--cell", "2"], ["inspect", "--text", "the"]):
        process = subprocess.Popen([sys.executable, "-m", "tui.cli", *args, "--run", str(trained["run"])],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        process.stdout.read(10)  # as `head -c 10` does
        process.stdout.close()
        assert process.wait(timeout=60) in (0, 1), args  # 0: it had written everything already
        assert process.stderr.read() == b"", args
