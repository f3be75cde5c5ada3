"""Hostile or odd run files, reading side (issue #12): none may exhaust memory, hang,
or brick a run; each is refused in one sentence.

Whatever could run away (a decompression bomb, /dev/zero behind a link, a FIFO) is read
by a real child process under an address-space limit (RLIMIT_AS) and a timeout, so a
regression fails here instead of taking the machine down. Memory that must not depend on
a file's length is measured with tracemalloc on a real file tens of MB long.
"""

from __future__ import annotations

import io
import json
import os
import resource
import stat
import struct
import subprocess
import sys
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from engine.errors import RunDirError
from engine.files import checkpoints
from engine.files.metrics import MetricsTail, iter_metrics, read_metrics
from engine.files.rundir import RunDir
from engine.modeling.sampler import Sampler, _Lstm
from tests.runs import ENV, ROOT, TINY, assert_one_line_refusal, charlm, poison

# The command line needs ~150 MB of address space until it imports TensorFlow, which no
# refusal here may do; 1 GiB leaves room and stops any runaway read long before the machine.
MEMORY_LIMIT = 1 << 30


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def limited(*args) -> subprocess.CompletedProcess:
    """The real command line, under the memory limit; a hang fails the test at 60 s."""
    return charlm(*args, timeout=60, preexec_fn=_limit_memory)


def refusal_in_child(run: Path, call: str) -> str:
    """The RunDirError that `call` (engine code, `run` its run directory) raises in a child
    process under the memory limit and a 60 s timeout; the test fails if it raises none."""
    code = ("import sys\nfrom pathlib import Path\nfrom engine.errors import RunDirError\n"
            "from engine.files.metrics import MetricsTail\nfrom engine.files.rundir import RunDir\n"
            f"run = Path({str(run)!r})\n"
            f"try:\n    {call}\nexcept RunDirError as error:\n    print(error)\n    sys.exit(3)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=ENV, cwd=ROOT, preexec_fn=_limit_memory)
    assert out.returncode == 3 and "Traceback" not in out.stderr, out.stderr[-2000:]
    return out.stdout.strip()


def members_of(model_path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(model_path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def both_checkpoints(run: Path, data: bytes) -> None:
    """Make model.keras and model.prev.keras both `data`: no fallback hides the refusal."""
    (run / "model.keras").write_bytes(data)
    (run / "model.prev.keras").write_bytes(data)


# ---------------------------------------------------------------------------------------
# 1. model.keras: declared sizes, compression methods and ratios, before any decompression


@pytest.fixture(scope="module")
def bzip2_bomb(base_run, tmp_path_factory) -> bytes:
    """A real .keras archive whose weights are 1 GiB of zeros in bzip2 (under 1 KB)."""
    path = tmp_path_factory.mktemp("bomb") / "model.keras"
    zeros = bytes(1 << 20)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members_of(base_run / "model.keras").items():
            if name != "model.weights.h5":
                archive.writestr(name, data)
        weights = zipfile.ZipInfo("model.weights.h5")
        weights.compress_type = zipfile.ZIP_BZIP2
        with archive.open(weights, "w", force_zip64=True) as member:
            for _ in range(1024):
                member.write(zeros)
    return path.read_bytes()


def hand_made_zip(entries: list[tuple[str, int, bytes, int, int]]) -> bytes:
    """A zip built byte by byte from (name, method, payload, crc, declared size), every
    size in a zip64 field, so that a member can declare any size at all."""
    out, directory = bytearray(), bytearray()
    for name, method, payload, crc, declared in entries:
        encoded, extra = name.encode(), struct.pack("<HHQQ", 1, 16, declared, len(payload))
        offset = len(out)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 45, 0, method, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                           len(encoded), len(extra)) + encoded + extra + payload
        directory += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 45, 45, 0, method, 0, 0, crc, 0xFFFFFFFF,
                                 0xFFFFFFFF, len(encoded), len(extra), 0, 0, 0, 0, offset) + encoded + extra
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(directory),
                      len(out), 0)
    return bytes(out + directory + end)


def declaring_one_tib(model_path: Path) -> bytes:
    """The run's own archive, but its weights: 1 MiB of zeros, deflated, declared as 1 TiB."""
    members = members_of(model_path)
    zeros = bytes(1 << 20)
    squeezer = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = squeezer.compress(zeros) + squeezer.flush()
    return hand_made_zip([
        ("metadata.json", zipfile.ZIP_STORED, members["metadata.json"], zlib.crc32(members["metadata.json"]),
         len(members["metadata.json"])),
        ("config.json", zipfile.ZIP_STORED, members["config.json"], zlib.crc32(members["config.json"]),
         len(members["config.json"])),
        ("model.weights.h5", zipfile.ZIP_DEFLATED, deflated, zlib.crc32(zeros), 1 << 40),
    ])


@pytest.mark.trains
def test_a_bzip2_bomb_is_refused_before_anything_is_decompressed(bzip2_bomb, run_copy):
    assert len(bzip2_bomb) < 16_000
    both_checkpoints(run_copy, bzip2_bomb)
    out = limited("sample", "--run", run_copy, "--length", "5")
    assert_one_line_refusal(out, "no loadable checkpoint", "compressed with bzip2", "decompression bomb")


def test_a_checkpoint_declaring_a_terabyte_is_refused_before_anything_is_decompressed(run_copy):
    hostile = declaring_one_tib(run_copy / "model.keras")
    with zipfile.ZipFile(io.BytesIO(hostile)) as archive:  # well formed: zipfile reads what it declares
        assert len(hostile) < 64_000 and archive.getinfo("model.weights.h5").file_size == 1 << 40
    both_checkpoints(run_copy, hostile)
    out = limited("sample", "--run", run_copy, "--length", "5")
    assert_one_line_refusal(out, "model.weights.h5 in the archive declares 1,099,511,627,776 bytes",
                            "more than a checkpoint of this run ever holds")


def test_a_weights_file_larger_than_the_run_needs_is_refused(run_copy):
    """Stored (Keras's own method) but 64 MiB: far more than an 8-unit model's weights."""
    members = members_of(run_copy / "model.keras")
    members["model.weights.h5"] += bytes(64 << 20)
    with zipfile.ZipFile(run_copy / "model.keras", "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    (run_copy / "model.prev.keras").unlink()
    out = limited("sample", "--run", run_copy, "--length", "5")
    assert_one_line_refusal(out, "model.keras is", "bytes, more than charlm-tui ever writes there")


def test_a_weights_dataset_declaring_a_gigabyte_of_fill_value_is_refused(run_copy):
    """HDF5 lets a dataset that stores nothing declare any shape (its fill value fills
    it): a few KB that Keras, assigning the weight, would turn into a gigabyte."""
    import h5py

    members = members_of(run_copy / "model.keras")
    weights = io.BytesIO(members["model.weights.h5"])
    with h5py.File(weights, "r+") as h5:
        del h5["layers/dense/vars/1"]  # the output bias
        h5.create_dataset("layers/dense/vars/1", shape=(1 << 28,), dtype="f4", chunks=(1 << 16,))
    members["model.weights.h5"] = weights.getvalue()
    assert len(members["model.weights.h5"]) < 256_000
    with zipfile.ZipFile(run_copy / "model.keras", "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    (run_copy / "model.prev.keras").write_bytes((run_copy / "model.keras").read_bytes())
    out = limited("sample", "--run", run_copy, "--length", "5")
    assert_one_line_refusal(out, "its weights file declares more than",
                            "more than a model of this run's size holds")


# ---------------------------------------------------------------------------------------
# 2. Run files that are not regular files: links, FIFOs, devices


def make_link_to_dev_zero(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.symlink_to("/dev/zero")


def make_fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def make_zero_device(path: Path) -> None:
    path.unlink(missing_ok=True)
    try:
        os.mknod(path, stat.S_IFCHR | 0o644, os.makedev(1, 5))  # what /dev/zero is
    except PermissionError:
        pytest.skip("creating a device node needs root")


@pytest.mark.parametrize("name, make, expected", [
    ("config.json", make_link_to_dev_zero, "is a symbolic link, not a regular file"),
    ("vocab.json", make_link_to_dev_zero, "is a symbolic link, not a regular file"),
    ("vocab.json", make_fifo, "is a FIFO, not a regular file"),
    ("vocab.json", make_zero_device, "is a device, not a regular file"),
    ("model.keras", make_fifo, "is a FIFO, not a regular file"),
    ("model.keras", make_link_to_dev_zero, "is a symbolic link, not a regular file"),
])
def test_a_run_file_that_is_not_a_regular_file_is_refused_without_reading_it(name, make, expected, run_copy):
    if name == "model.keras":
        (run_copy / "model.prev.keras").unlink()  # else it is used instead, with a note
    make(run_copy / name)
    out = limited("sample", "--run", run_copy, "--length", "5")
    assert_one_line_refusal(out, name, expected)


def test_a_fifo_model_keras_falls_back_to_the_previous_checkpoint_with_a_note(run_copy):
    make_fifo(run_copy / "model.keras")
    out = charlm("sample", "--run", run_copy, "--length", "5", "--seed", "1", timeout=120)  # TensorFlow loads
    assert out.returncode == 0, out.stderr
    assert "model.keras is a FIFO" in out.stderr and "using the previous one, model.prev.keras" in out.stderr


READERS = {
    "state.json": "RunDir(run).load_state()",
    "metrics.jsonl": "RunDir(run).read_metrics()",
    "metrics.jsonl (resume)": "RunDir(run).keep_metrics_up_to(3)",
    "metrics.jsonl (watch)": "MetricsTail(run / 'metrics.jsonl').poll()",
}


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("make", [make_link_to_dev_zero, make_fifo])
def test_state_and_metrics_that_are_not_regular_files_are_refused(reader, make, run_copy):
    name = reader.split()[0]
    make(run_copy / name)
    refusal = refusal_in_child(run_copy, READERS[reader])
    assert f"{name} is a " in refusal and "not a regular file" in refusal
    assert stat.S_ISLNK(os.lstat(run_copy / name).st_mode) or stat.S_ISFIFO(os.lstat(run_copy / name).st_mode)


@pytest.mark.parametrize("name", ["config.json", "vocab.json", "state.json"])
def test_a_json_run_file_of_more_than_4_mb_is_refused_unread(name, run_copy):
    with open(run_copy / name, "wb") as handle:
        handle.truncate(8 << 30)  # sparse: 8 GiB of zeros on no disk space
    reader = {"config.json": "load_config", "vocab.json": "load_vocab", "state.json": "load_state"}[name]
    refusal = refusal_in_child(run_copy, f"RunDir(run).{reader}()")
    assert f"{name} is 8,589,934,592 bytes, more than charlm-tui ever writes there" in refusal


# ---------------------------------------------------------------------------------------
# 3. metrics.jsonl as a stream: memory independent of its length, long lines skipped


def peak_memory(action) -> tuple[object, int]:
    """(result, peak bytes Python allocated while `action` ran)."""
    tracemalloc.start()
    try:
        result = action()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def row(step: int, padding: int = 0) -> bytes:
    return (json.dumps({"kind": "interval", "step": step, "train_loss": 3.0, "note": "x" * padding},
                       sort_keys=True) + "\n").encode()


@pytest.fixture
def long_metrics(tmp_path) -> tuple[Path, list[bytes]]:
    """A 64 MB metrics.jsonl: a few real rows, then 8 KB rows logged after the checkpoint,
    a 16 MB line, compact rows as another writer might format them, and a torn last row."""
    run = tmp_path / "run"
    run.mkdir()
    kept = [row(1), row(2), b'{"step":3,"kind":"interval"}\n']  # copied as they are, never re-spaced
    with open(run / "metrics.jsonl", "wb") as handle:
        handle.write(kept[0] + kept[1])
        for step in range(4, 4000):
            handle.write(row(step, padding=8000))
        handle.write(b'{"step": 1, "x": "' + b"y" * (16 << 20) + b'"}\n')
        handle.write(kept[2])
        for step in range(4000, 6000):
            handle.write(row(step, padding=8000))
        handle.write(b'{"step": 2, "torn": ')
    return run, kept


def test_resume_trims_metrics_as_a_stream_and_never_grows_the_file(long_metrics):
    run, kept = long_metrics
    size = (run / "metrics.jsonl").stat().st_size
    assert size > 60 << 20
    _, peak = peak_memory(lambda: RunDir(run).keep_metrics_up_to(3))
    assert peak < 8 << 20, f"{peak / 2**20:.1f} MiB to trim a {size / 2**20:.0f} MiB file"
    assert (run / "metrics.jsonl").read_bytes() == b"".join(kept)
    assert not list(run.glob(".*tmp*"))


def test_reading_metrics_takes_memory_independent_of_the_files_length(long_metrics):
    run, _ = long_metrics
    steps, peak = peak_memory(lambda: [r["step"] for r in iter_metrics(run / "metrics.jsonl")])
    assert peak < 8 << 20, f"{peak / 2**20:.1f} MiB"
    # The 16 MB line is skipped unread; the torn last row does not parse.
    assert steps == [1, 2, *range(4, 4000), 3, *range(4000, 6000)]
    assert [r["step"] for r in read_metrics(run)] == steps


def test_a_watcher_reads_a_bounded_chunk_per_poll_and_catches_up(long_metrics):
    run, _ = long_metrics
    tail = MetricsTail(run / "metrics.jsonl")
    steps, polls, peak = [], 0, 0
    tracemalloc.start()
    try:
        while True:
            rows, reset = tail.poll()
            polls += 1
            peak = max(peak, tracemalloc.get_traced_memory()[1])
            tracemalloc.reset_peak()
            assert not reset
            if not rows and tail.offset >= (run / "metrics.jsonl").stat().st_size:
                break
            steps += [r["step"] for r in rows]
    finally:
        tracemalloc.stop()
    assert steps == [1, 2, *range(4, 4000), 3, *range(4000, 6000)]
    assert polls > 60 and peak < 8 << 20, (polls, peak)
    with open(run / "metrics.jsonl", "ab") as handle:  # the torn row is finished, and one more comes
        handle.write(b'"yes"}\n' + row(6000))
    assert [r["step"] for r in tail.poll()[0]] == [2, 6000]
    RunDir(run).keep_metrics_up_to(3)  # a resume replaces the file: the watcher starts over
    rows, reset = tail.poll()
    assert reset and [r["step"] for r in rows] == [1, 2, 3, 2]


def test_a_metrics_line_nested_deep_enough_to_break_json_is_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(row(1) + b"[" * 60_000 + b"\n" + row(2))
    assert [r["step"] for r in iter_metrics(path)] == [1, 2]


# ---------------------------------------------------------------------------------------
# 4. Settings: the same rules on the way in and on the way out


def with_config(run: Path, **fields) -> None:
    data = json.loads((run / "config.json").read_text())
    data["config"].update(fields)
    (run / "config.json").write_text(json.dumps(data))


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("fields, expected", [
    ({"val_max_windows": 0}, "val_max_windows must be at least 1"),
    ({"val_max_windows": -3}, "val_max_windows must be at least 1"),
    ({"extra": nested(600)}, "extra must be an object nested at most 32 levels deep"),
    ({"checkpoint_every": -1}, "checkpoint_every: --checkpoint-every must be a finite number of seconds"),
    ({"seed": -1}, "seed: --seed must be a whole number from 0 to 4294967295"),
    ({"seed": 2**40}, "seed: --seed must be"),
    ({"temperatures": [0.5, 1e-320]},
     "temperatures: each temperature must be 0 (greedy) or a number from 0.01"),
    ({"clipnorm": 0}, "clipnorm must be a positive finite number"),
])
def test_config_json_with_a_value_that_cannot_work_is_refused_naming_the_field(fields, expected, run_copy):
    with_config(run_copy, **fields)
    with pytest.raises(RunDirError, match="config.json is not a valid charlm-tui config") as refusal:
        RunDir(run_copy).load_config()
    assert expected in str(refusal.value)
    assert_one_line_refusal(limited("sample", "--run", run_copy, "--length", "5"), expected)


def test_an_infinite_time_budget_is_refused_on_the_way_in(corpus_file, tmp_path):
    out = limited("train", "--corpus", corpus_file, "--run", tmp_path / "run", *TINY, "--time-budget", "inf",
                  "--dry-run")
    assert_one_line_refusal(out, "--time-budget must be a positive finite number of seconds")
    assert not (tmp_path / "run").exists()


def test_resuming_a_run_with_a_deeply_nested_extra_is_one_line(run_copy, corpus_file):
    with_config(run_copy, extra=nested(600))
    before = (run_copy / "config.json").read_bytes()
    out = limited("train", "--corpus", corpus_file, "--run", run_copy, *TINY, "--steps", "1")
    assert_one_line_refusal(out, "extra must be an object nested at most 32 levels deep")
    assert (run_copy / "config.json").read_bytes() == before


# ---------------------------------------------------------------------------------------
# 5. Only the exact network charlm-tui builds is accepted


def foreign_model(vocab_size: int, twist: str):
    """build_model's network with one twist, built and saved by Keras itself."""
    from engine.tfsetup import keras

    layers = keras().layers
    inputs = keras().Input(shape=(None,), dtype="int32", name="char_ids")
    x = layers.Reshape((-1, 1), name="ids_column")(inputs)
    x = layers.CategoryEncoding(num_tokens=vocab_size, output_mode="one_hot", name="one_hot")(x)
    lstm_options = {"relu": {"activation": "relu"}, "backwards": {"go_backwards": True}}.get(twist, {})
    x = layers.LSTM(8, return_sequences=True, name="lstm_1", **lstm_options)(x)
    if twist == "extra dense":
        x = layers.Dense(8, name="hidden")(x)
    outputs = layers.Dense(vocab_size + (twist == "wrong dense"), activation="softmax", name="next_char")(x)
    model = keras().Model(inputs, outputs, name="charlm_fast")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    return model


@pytest.mark.parametrize("twist, expected", [
    ("relu", "'lstm_1' has activation='relu', not 'tanh'"),
    ("backwards", "'lstm_1' has go_backwards=True, not False"),
    ("wrong dense", "'next_char' has units="),
    ("extra dense", "layers InputLayer > Reshape > CategoryEncoding > LSTM > Dense > Dense, "
                    "not InputLayer > Reshape > CategoryEncoding > LSTM > Dense"),
])
@pytest.mark.trains
def test_a_network_charlm_tui_did_not_build_is_refused_before_keras_loads_it(twist, expected, run_copy):
    vocab_size = len(RunDir(run_copy).load_vocab())
    foreign_model(vocab_size, twist).save(run_copy / "model.keras")
    (run_copy / "model.prev.keras").unlink()
    with pytest.raises(RunDirError, match="it is not the network charlm-tui builds for this run") as refusal:
        checkpoints.load_model(RunDir(run_copy), compile=False)
    assert expected in str(refusal.value)
    assert_one_line_refusal(limited("sample", "--run", run_copy, "--length", "5"), expected)


@pytest.mark.trains
def test_the_networks_charlm_tui_builds_are_accepted(tmp_path):
    from engine.files.vetting import archive_problem
    from engine.modeling.model import build_model
    from tests.conftest import tiny_config

    for settings in ({"layers": 2, "dropout": 0.1}, {"preset": "book", "units": 8}, {"layers": 3}):
        config = tiny_config(**settings)
        path = tmp_path / "model.keras"
        build_model(30, config).save(path)
        assert archive_problem(path, config, 30) is None, settings
        assert "num_tokens=30, not 31" in archive_problem(path, config, 31)


# ---------------------------------------------------------------------------------------
# 6. A checkpoint holding NaN weights


@pytest.mark.trains
def test_a_model_with_nan_weights_is_said_to_be_broken(run_copy):
    poison(run_copy / "model.keras")
    out = charlm("sample", "--run", run_copy, "--length", "20", "--seed", "1")
    assert_one_line_refusal(out, str(run_copy), "holds NaN or infinite weights: it is broken")


def tiny_sampler(**replace) -> Sampler:
    rng = np.random.default_rng(0)
    weights = {"kernel": rng.normal(size=(3, 8)), "recurrent": rng.normal(size=(2, 8)), "bias": np.zeros(8),
               "dense_kernel": rng.normal(size=(2, 3)), "dense_bias": np.zeros(3)}
    weights.update(replace)
    lstm = _Lstm(weights["kernel"], weights["recurrent"], weights["bias"])
    return Sampler("abc", [lstm], weights["dense_kernel"], weights["dense_bias"], lowercase=False)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_the_sampler_refuses_weights_that_are_not_finite(bad):
    assert tiny_sampler().generate("ab", [1.0], 5, seed=1)
    with pytest.raises(ValueError, match="holds NaN or infinite weights"):
        tiny_sampler(dense_bias=np.array([0.0, bad, 0.0]))


# ---------------------------------------------------------------------------------------
# 7. Sampling options are refused, not accepted and then ignored


@pytest.mark.parametrize("option, value", [
    ("--top-k", "0"), ("--top-k", "-5"),
    ("--top-p", "nan"), ("--top-p", "2"), ("--top-p", "-1"), ("--top-p", "0"),
    ("--temperatures", "1e-320"), ("--temperatures", "0.5,0.001"),
    ("--seed", "-1"), ("--seed", "99999999999"),
])
def test_a_sampling_option_outside_its_rule_is_refused_naming_it(option, value, run_copy):
    out = charlm("sample", "--run", run_copy, "--length", "20", option, value)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stdout
    assert f"error: argument {option}: " in out.stderr.strip().splitlines()[-1]
    assert "RuntimeWarning" not in out.stderr


@pytest.mark.parametrize("options, named", [
    ({"top_k": 0}, "--top-k"), ({"top_k": -5}, "--top-k"), ({"top_p": float("nan")}, "--top-p"),
    ({"top_p": 2.0}, "--top-p"), ({"top_p": -1.0}, "--top-p"), ({"seed": -1}, "--seed"),
    ({"temperatures": [1e-320]}, "--temperatures"), ({"temperatures": [float("inf")]}, "--temperatures"),
    ({"length": -1}, "--length"),
])
def test_the_sampler_refuses_the_same_options_for_every_front_end(options, named):
    sampler = tiny_sampler()
    arguments = {"seed_text": "ab", "temperatures": [1.0], "length": 5, **options}
    with pytest.raises(ValueError, match=f"^{named} must be "):
        sampler.stream(**arguments)  # at once, before anything is generated
    with pytest.raises(ValueError, match=f"^{named} must be "):
        sampler.generate(**arguments)


def test_the_edges_of_the_sampling_rules_are_accepted():
    texts = tiny_sampler().generate("ab", [0, 0.01, 10], 5, seed=0, top_k=1, top_p=1.0)
    assert all(len(text) == 5 for text in texts.values())
    assert tiny_sampler().generate("ab", [1.0], 5, seed=2**32 - 1, top_k=99, top_p=1e-9)
