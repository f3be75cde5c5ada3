"""Text without TensorFlow: the sampler's numpy sidecar beside each checkpoint.

`charlm-tui sample` must give the same text for the same --seed from the sidecar as
from Keras, without importing TensorFlow; a sidecar that does not match its .keras file
byte for byte (stale, damaged, hostile) is never used; readers rebuild a missing one
only where they may write and no trainer is at work.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from engine.files import checkpoints, sidecar
from engine.files.rundir import RunDir
from engine.modeling.sampler import Sampler, keras_weights, reading_for
from tests.conftest import tiny_config
from tests.runs import lambda_model

pytestmark = pytest.mark.trains  # trains a tiny model or loads one with Keras: `make test-fast` leaves it out

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
SAMPLE = ["--length", "120", "--seed", "5", "--temperatures", "0,0.5,1.0,1.2", "--json"]


# `python -m tui.cli ARGS`, saying on its last line of stderr, from an exit handler, which
# of these modules it had imported (-X importtime cannot tell: TensorFlow is imported
# with file descriptor 2 pointed elsewhere).
REPORTING_IMPORTS = (
    "import atexit, runpy, sys\n"
    "atexit.register(lambda: print('imported:', sorted(m for m in ('numpy', 'engine.files.rundir',"
    " 'tensorflow', 'keras') if m in sys.modules), file=sys.stderr))\n"
    "sys.argv[0] = 'charlm-tui'\n"
    "runpy.run_module('tui.cli', run_name='__main__', alter_sys=True)\n")


def charlm(*args, prefix=(), report_imports=False, timeout=300) -> subprocess.CompletedProcess:
    program = ["-c", REPORTING_IMPORTS] if report_imports else ["-m", "tui.cli"]
    command = [*prefix, sys.executable, *program, *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=ENV, cwd=ROOT)


def split_report(stderr: str) -> tuple[list[str], list[str]]:
    """(the modules reported, the other lines of stderr)."""
    *lines, report = stderr.splitlines()
    assert report.startswith("imported: "), stderr
    return json.loads(report.removeprefix("imported: ").replace("'", '"')), lines


@pytest.fixture
def run_copy(base_run, tmp_path) -> Path:
    """A copy of conftest's base_run (3 steps, a checkpoint after each), best checkpoint and all."""
    copy = tmp_path / "run"
    shutil.copytree(base_run, copy, ignore=shutil.ignore_patterns(".lock"))
    return copy


@pytest.fixture(scope="module")
def keras_text(base_run, tmp_path_factory) -> dict:
    """What `sample` printed before sidecars existed: the run read through Keras."""
    copy = tmp_path_factory.mktemp("keras-only") / "run"
    shutil.copytree(base_run, copy, ignore=shutil.ignore_patterns(".lock", "*.sampler.npz"))
    out = charlm("sample", "--run", copy, *SAMPLE)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def without_run_path(result: dict) -> dict:
    """The result without the paths of the run and its checkpoint (only its name)."""
    return {**{key: value for key, value in result.items() if key not in ("run", "checkpoint")},
            "checkpoint": Path(result["checkpoint"]).name}


def sampler_from_keras(keras_path: Path, run: Path) -> tuple[Sampler, int]:
    from engine.tfsetup import keras

    model = keras().saving.load_model(keras_path, safe_mode=True, compile=False)
    saved = RunDir(run)
    return Sampler.from_keras_model(model, saved.load_vocab()), int(model.count_params())


# -- the fast path --------------------------------------------------------------------------------
def test_sample_from_the_sidecar_prints_the_same_text_without_importing_tensorflow(run_copy, keras_text):
    out = charlm("sample", "--run", run_copy, *SAMPLE, report_imports=True)
    assert out.returncode == 0, out.stderr
    assert without_run_path(json.loads(out.stdout)) == without_run_path(keras_text)
    assert split_report(out.stderr) == (["engine.files.rundir", "numpy"], [])  # no tensorflow, no keras


def keras_must_not_be_needed(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the fast path went to Keras")

    monkeypatch.setattr(checkpoints, "load_model", refuse)


def test_the_sidecar_gives_bit_identical_probabilities_to_the_keras_model(run_copy, monkeypatch):
    from_keras, keras_parameters = sampler_from_keras(run_copy / "model.keras", run_copy)
    keras_must_not_be_needed(monkeypatch)
    from_sidecar, parameters = checkpoints.load_sampler(RunDir(run_copy))
    assert parameters == keras_parameters
    for prefix in ("t", "the will to power", "woman. " * 12):
        assert np.array_equal(from_sidecar.next_distribution(prefix), from_keras.next_distribution(prefix))


def test_a_stacked_model_saved_by_save_model_round_trips_exactly(tmp_path, monkeypatch):
    """Two layers, random weights far from an initialisation, through RunDir.save_model."""
    from engine.modeling.model import build_model

    vocab, config = tuple("abcdefg"), tiny_config(units=12, layers=2)
    model = build_model(len(vocab), config)
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(0, 0.6, w.shape).astype("float32") for w in model.get_weights()])
    run = RunDir(tmp_path / "run")
    run.create()
    run.write_config(config, {})
    run.write_vocab(vocab)
    checkpoints.save_model(run, model)

    stored = sidecar.decode(sidecar.sidecar_path(run.model_path).read_bytes(),
                            sidecar.fingerprint(run.model_path),
                            {k: v.shape for k, v in keras_weights(model).items()})
    from_keras = Sampler.from_keras_model(model, vocab, reading=reading_for(config))
    keras_must_not_be_needed(monkeypatch)
    from_sidecar, parameters = checkpoints.load_sampler(run)
    assert parameters == model.count_params() and len(stored) == 8
    assert from_sidecar.reading == (16, 8), "it reads its stream in the run's windows"
    ids = np.array([[vocab.index(ch) for ch in "gfedcba" * 9]], dtype="int32")
    np.testing.assert_allclose(from_sidecar.next_distribution("gfedcba" * 9),
                               model.predict(ids, verbose=0)[0][-1], atol=2e-6)
    for prefix in ("a", "abcabc", "gfedcba" * 9):
        assert np.array_equal(from_sidecar.next_distribution(prefix), from_keras.next_distribution(prefix))
    assert (from_sidecar.generate("abc", [0, 0.5, 1.2], 200, seed=7)
            == from_keras.generate("abc", [0, 0.5, 1.2], 200, seed=7))


def test_each_checkpoint_rotates_its_sidecar_with_model_prev_keras(run_copy):
    for keras_name in ("model.keras", "model.prev.keras"):
        keras_path = run_copy / keras_name
        expected = keras_weights(_keras_model(keras_path))
        weights = sidecar.decode(sidecar.sidecar_path(keras_path).read_bytes(),
                                 sidecar.fingerprint(keras_path),
                                 {name: array.shape for name, array in expected.items()})
        assert weights.keys() == expected.keys()
        assert all(np.array_equal(weights[name], expected[name]) for name in weights)
        assert all(weights[name].dtype == np.float32 for name in weights)
    # the two checkpoints differ (steps 2 and 3), and so do their sidecars
    assert (run_copy / "model.sampler.npz").read_bytes() != (run_copy / "model.prev.sampler.npz").read_bytes()


def _keras_model(path: Path):
    from engine.tfsetup import keras

    return keras().saving.load_model(path, safe_mode=True, compile=False)


def test_a_damaged_model_keras_falls_back_to_the_previous_sidecar_with_todays_notice(run_copy, tmp_path):
    model_path = run_copy / "model.keras"
    model_path.write_bytes(model_path.read_bytes()[:1000])
    keras_only = tmp_path / "keras-only"
    shutil.copytree(run_copy, keras_only, ignore=shutil.ignore_patterns("*.sampler.npz"))

    latest = ("--checkpoint", "latest")  # (a stopped run is read from its best by default)
    fast = charlm("sample", "--run", run_copy, *SAMPLE, *latest, report_imports=True)
    slow = charlm("sample", "--run", keras_only, *SAMPLE, *latest)
    assert fast.returncode == 0 and slow.returncode == 0, slow.stderr
    modules, notes = split_report(fast.stderr)
    assert "tensorflow" not in modules
    assert notes == slow.stderr.splitlines() == [
        "charlm-tui: note: could not load the latest checkpoint (model.keras: not a .keras archive "
        "(truncated or damaged)); using the previous one, model.prev.keras, instead (both files are kept)"]
    assert without_run_path(json.loads(fast.stdout)) == without_run_path(json.loads(slow.stdout))
    assert Path(json.loads(fast.stdout)["checkpoint"]).name == "model.prev.keras"  # and says so
    # the slow reader rebuilt the sidecar of the checkpoint it used, not of the damaged one
    assert (keras_only / "model.prev.sampler.npz").is_file()
    assert not (keras_only / "model.sampler.npz").exists()


# -- sidecars that must not be used ------------------------------------------------------------------
class Unpickled:
    """An object whose unpickling creates a marker file: proof that something unpickled it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _rewrite_members(path: Path, change) -> None:
    """Rewrite a sidecar's members {name: array} through `change`, keeping its fingerprint."""
    with zipfile.ZipFile(path) as archive:
        arrays = {name.removesuffix(".npy"): np.lib.format.read_array(archive.open(name))
                  for name in archive.namelist()}
    change(arrays)
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, np.asarray(array), allow_pickle=True)


def _flip_a_weight_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    at = data.index(b"dense_kernel.npy") + 400  # inside that member's float data
    data[at] ^= 0x40
    path.write_bytes(bytes(data))


DAMAGE = {
    "stale": lambda run, marker: shutil.copy(run / "model.prev.sampler.npz", run / "model.sampler.npz"),
    "truncated": lambda run, marker: (run / "model.sampler.npz").write_bytes(
        (run / "model.sampler.npz").read_bytes()[:3000]),
    "flipped byte": lambda run, marker: _flip_a_weight_byte(run / "model.sampler.npz"),
    "wrong shape": lambda run, marker: _rewrite_members(
        run / "model.sampler.npz", lambda a: a.update(dense_bias=np.zeros(3, np.float32))),
    "NaN weights": lambda run, marker: _rewrite_members(
        run / "model.sampler.npz", lambda a: a.update(dense_bias=np.full_like(a["dense_bias"], np.nan))),
    "extra member": lambda run, marker: _rewrite_members(
        run / "model.sampler.npz", lambda a: a.update(extra=np.zeros(1))),
    "object array": lambda run, marker: _rewrite_members(
        run / "model.sampler.npz",
        lambda a: a.update(dense_bias=np.array([Unpickled(marker)] * len(a["dense_bias"]), dtype=object))),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_sidecar_that_does_not_match_is_ignored_and_rebuilt(damage, run_copy, tmp_path):
    marker = tmp_path / "something-unpickled"
    DAMAGE[damage](run_copy, marker)
    if damage == "object array":  # the hostile file works: numpy allowed to unpickle runs it
        with zipfile.ZipFile(run_copy / "model.sampler.npz") as archive:
            np.lib.format.read_array(archive.open("dense_bias.npy"), allow_pickle=True)
        assert marker.exists()
        marker.unlink()
    keras_path = run_copy / "model.keras"
    shapes = {k: v.shape for k, v in keras_weights(_keras_model(keras_path)).items()}
    with pytest.raises(ValueError):
        sidecar.decode((run_copy / "model.sampler.npz").read_bytes(), sidecar.fingerprint(keras_path), shapes)

    loaded, _ = checkpoints.load_sampler(RunDir(run_copy))  # through Keras
    expected, _ = sampler_from_keras(keras_path, run_copy)
    assert not marker.exists()
    assert np.array_equal(loaded.next_distribution("the will"), expected.next_distribution("the will"))
    rebuilt = sidecar.decode((run_copy / "model.sampler.npz").read_bytes(), sidecar.fingerprint(keras_path),
                             shapes)
    assert np.isfinite(rebuilt["dense_bias"]).all()


def test_a_hostile_model_keras_is_refused_even_with_a_matching_sidecar(run_copy, tmp_path):
    """The fast path vets the .keras archive as the Keras path does: a sidecar made to
    match a Lambda layer's file does not make that file acceptable."""
    marker = tmp_path / "the-lambda-ran"
    model_path = run_copy / "model.keras"
    weights = sidecar.decode((run_copy / "model.sampler.npz").read_bytes(), sidecar.fingerprint(model_path),
                             {k: v.shape for k, v in keras_weights(_keras_model(model_path)).items()})
    lambda_model(marker).save(model_path)
    marker.unlink(missing_ok=True)
    (run_copy / "model.prev.keras").unlink()
    (run_copy / "model.sampler.npz").write_bytes(sidecar.encode(weights, sidecar.fingerprint(model_path)))

    out = charlm("sample", "--run", run_copy, "--length", "5", "--checkpoint", "latest")
    assert out.returncode == 1 and out.stderr.startswith("charlm-tui: error: ")
    assert "Lambda layer" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not marker.exists()


def test_a_checkpoint_with_nan_weights_gets_no_sidecar(run_copy):
    model = _keras_model(run_copy / "model.keras")
    weights = model.get_weights()
    weights[-1][:] = np.nan
    model.set_weights(weights)
    checkpoints.save_model(RunDir(run_copy), model)
    assert (run_copy / "model.prev.sampler.npz").is_file()  # the good one, rotated
    assert not (run_copy / "model.sampler.npz").exists()


# -- who rebuilds a missing sidecar ---------------------------------------------------------------------
def test_a_reader_rebuilds_a_missing_sidecar_in_a_run_it_may_write(run_copy):
    expected = (run_copy / "model.sampler.npz").read_bytes()
    (run_copy / "model.sampler.npz").unlink()
    checkpoints.load_sampler(RunDir(run_copy), rebuild_sidecar=False)  # a watcher that writes nothing
    assert not (run_copy / "model.sampler.npz").exists()
    checkpoints.load_sampler(RunDir(run_copy))
    assert (run_copy / "model.sampler.npz").read_bytes() == expected  # the same bytes the trainer wrote


def test_a_reader_never_writes_while_a_trainer_holds_the_run(run_copy):
    (run_copy / "model.sampler.npz").unlink()
    trainer = RunDir(run_copy)
    trainer.acquire()  # as a training process holds it
    try:
        out = charlm("sample", "--run", run_copy, "--length", "5")
        assert out.returncode == 0, out.stderr
        assert not (run_copy / "model.sampler.npz").exists()
    finally:
        trainer.release()


def _read_only_mount_works(path: Path) -> bool:
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {path} {path} && "
                            f"mount -o remount,ro,bind {path} && ! touch {path}/probe 2>/dev/null"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0 and not (path / "probe").exists()


def test_a_reader_on_a_read_only_file_system_samples_and_writes_nothing(run_copy, keras_text):
    if not shutil.which("unshare") or not _read_only_mount_works(run_copy):
        pytest.skip("needs unshare and mount (root in a mount namespace) for a read-only file system")
    (run_copy / "model.sampler.npz").unlink()
    read_only = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && '
                 'exec "$@"', str(run_copy)]
    out = charlm("sample", "--run", run_copy, *SAMPLE, prefix=read_only)
    assert out.returncode == 0, out.stderr
    assert without_run_path(json.loads(out.stdout)) == without_run_path(keras_text)
    assert not (run_copy / "model.sampler.npz").exists()
