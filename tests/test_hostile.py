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
from engine.rundir import RunDir
from engine.sampler import Sampler, _Lstm
from tests.test_reliability import (ENV, ROOT, TINY, assert_one_line_refusal, base_run, charlm,  # noqa: F401
                                    corpus_file, poison, run_copy)

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
            "from engine.rundir import MetricsTail, RunDir\n"
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
    ({"temperatures": [0.5, 1e-320]}, "temperatures: each temperature must be 0 (greedy) or a number from 0.01"),
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
# 6. A checkpoint holding NaN weights


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
