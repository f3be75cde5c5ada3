"""Text without TensorFlow: the sampler's numpy sidecar beside each checkpoint.

Importing TensorFlow takes seconds and hundreds of MB, yet the sampler is numpy and
needs only the LSTM and Dense weights. So every checkpoint gets a sidecar holding
exactly those arrays:

    model.keras       ->  model.sampler.npz
    model.prev.keras  ->  model.prev.sampler.npz   (rotated with it)

A sidecar is an .npz (a zip of .npy files, which numpy loads with allow_pickle=False):

    format         int64 scalar, 1
    keras_size     int64 scalar: the size in bytes of the .keras file it was made from
    keras_sha256   32 uint8: the SHA-256 of that file's bytes
    lstm_1_kernel, lstm_1_recurrent_kernel, lstm_1_bias, ..., dense_kernel, dense_bias
                   the weights exactly as Keras holds them (engine.sampler.keras_weights)

The .keras file stays the source of truth. A sidecar is used only when its fingerprint
matches the bytes of the .keras file beside it and that archive passes the same vetting
as before Keras reads it; otherwise the checkpoint loads through Keras (safe mode) as
before, and the sidecar is rebuilt from what was loaded when the run directory is
writable and no trainer holds it. A stale, missing, damaged or foreign sidecar therefore
costs time, never correctness, and a race with a trainer is harmless: a sidecar written
for bytes that have since been replaced simply no longer matches.

Nothing in a sidecar is executed: every member's .npy header (dtype, shape) is checked
against config.json and vocab.json before its data is read, arrays are read by numpy's
.npy reader with allow_pickle=False, and the weights must be finite.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import RunDirError
from engine.rundir import RunDir, archive_problem, atomic_write_bytes, fallback_notice, open_run_file
from engine.sampler import Sampler, keras_weights, weight_shapes

FORMAT = 1
_FINGERPRINT_SHAPES = {"format": (), "keras_size": (), "keras_sha256": (32,)}
_FINGERPRINT_DTYPES = {"format": np.dtype(np.int64), "keras_size": np.dtype(np.int64),
                       "keras_sha256": np.dtype(np.uint8)}
_WEIGHT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_MEMBER_OVERHEAD = 1024  # a generous bound on one member's zip and .npy headers
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed member times: the same weights give the same bytes


def sidecar_path(keras_path: Path) -> Path:
    """model.keras -> model.sampler.npz, model.prev.keras -> model.prev.sampler.npz."""
    keras_path = Path(keras_path)
    return keras_path.with_name(keras_path.name.removesuffix(".keras") + ".sampler.npz")


@dataclass(frozen=True)
class Fingerprint:
    """What a sidecar says about the .keras file it came from."""
    size: int
    sha256: bytes


@dataclass(frozen=True)
class _FileVersion:
    """One version of a file: replaced files get a new inode, so a load that started and
    ended with the same version read exactly these bytes."""
    inode: int
    mtime_ns: int
    fingerprint: Fingerprint


def fingerprint(path: Path) -> Fingerprint | None:
    version = _file_version(path)
    return version.fingerprint if version else None


def _file_version(path: Path) -> _FileVersion | None:
    digest = hashlib.sha256()
    try:
        with open_run_file(path) as handle:  # a regular file only: never a FIFO that would hang
            status = os.fstat(handle.fileno())
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except (OSError, RunDirError):
        return None
    return _FileVersion(status.st_ino, status.st_mtime_ns, Fingerprint(status.st_size, digest.digest()))


# -- the file format -------------------------------------------------------------------------
def encode(weights: dict[str, np.ndarray], source: Fingerprint) -> bytes:
    """A sidecar's bytes: the fingerprint of its .keras file, then the weights."""
    arrays = {"format": np.int64(FORMAT), "keras_size": np.int64(source.size),
              "keras_sha256": np.frombuffer(source.sha256, dtype=np.uint8), **weights}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            with archive.open(zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH), "w") as member:
                np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def decode(data: bytes, expected: Fingerprint, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The weights of a sidecar made from the .keras file with fingerprint `expected`, for
    a model with these weight shapes; ValueError (saying why) for anything else."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.namelist()
            wanted = {f"{name}.npy" for name in (*_FINGERPRINT_SHAPES, *shapes)}
            if len(members) != len(set(members)) or set(members) != wanted:
                raise ValueError("not the arrays of this model")
            if archive.testzip() is not None:
                raise ValueError("damaged (CRC mismatch)")
            stored = Fingerprint(int(_member(archive, "keras_size")),
                                 _member(archive, "keras_sha256").tobytes())
            if int(_member(archive, "format")) != FORMAT:
                raise ValueError("written by another version")
            if stored != expected:
                raise ValueError("made from another version of the checkpoint (stale)")
            weights = {name: _member(archive, name, shape) for name, shape in shapes.items()}
    except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as error:
        raise ValueError(f"not a readable .npz ({error})") from None
    if not all(np.isfinite(array).all() for array in weights.values()):
        raise ValueError("its weights are not all finite")
    return weights


def _member(archive: zipfile.ZipFile, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """One array, its .npy header checked before any of its data is read."""
    shape = _FINGERPRINT_SHAPES[name] if shape is None else shape
    dtypes = (_FINGERPRINT_DTYPES[name],) if name in _FINGERPRINT_DTYPES else _WEIGHT_DTYPES
    with archive.open(f"{name}.npy") as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"{name} has an unknown .npy version {version}")
        stored_shape, fortran_order, dtype = header
        if tuple(stored_shape) != tuple(shape) or fortran_order or dtype not in dtypes:
            raise ValueError(f"{name} is {dtype} {tuple(stored_shape)}, not {dtypes[0]} {tuple(shape)}")
    with archive.open(f"{name}.npy") as stream:
        return np.lib.format.read_array(stream, allow_pickle=False)


def _size_bound(shapes: dict[str, tuple[int, ...]]) -> int:
    """No sidecar of this model is larger (float64 weights, generous headers)."""
    values = sum(int(np.prod(shape)) for shape in shapes.values()) + 64
    return 8 * values + _MEMBER_OVERHEAD * (len(shapes) + len(_FINGERPRINT_SHAPES))


def _read_sidecar(keras_path: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray] | None:
    """The weights in the sidecar of `keras_path` if it matches that file's bytes, else None."""
    path = sidecar_path(keras_path)
    try:
        with open_run_file(path) as handle:
            data = handle.read(_size_bound(shapes) + 1)
    except (OSError, RunDirError):
        return None
    source = fingerprint(keras_path)
    if source is None or len(data) > _size_bound(shapes):
        return None
    try:
        return decode(data, source, shapes)
    except ValueError:
        return None  # the slow path decides, and rebuilds the sidecar where it may


# -- writing beside a checkpoint ----------------------------------------------------------------
def weights_of(model) -> dict[str, np.ndarray] | None:
    """The sampler's arrays of a model (None for a model that is not ours: no sidecar)."""
    try:
        return keras_weights(model)
    except ValueError:
        return None


def write_after_save(run: RunDir, model, weights_before_save: dict[str, np.ndarray] | None) -> None:
    """Called by RunDir.save_model once model.keras is in place: rotate the previous
    sidecar with model.prev.keras, then write the new one. It is written only if the model
    held the same weights before and after the save (so it holds what the file holds), and
    never fails the checkpoint: without a sidecar, readers take the Keras path."""
    _rotate(run)
    weights = weights_of(model)
    if weights is None or weights_before_save is None or not _same(weights, weights_before_save):
        return
    source = fingerprint(run.model_path)
    if source is None or not all(np.isfinite(array).all() for array in weights.values()):
        return
    try:
        atomic_write_bytes(sidecar_path(run.model_path), encode(weights, source))
    except RunDirError:
        pass  # a full disk: the next checkpoint (which will report it) retries


def _rotate(run: RunDir) -> None:
    """model.sampler.npz becomes model.prev.sampler.npz if it belongs to model.prev.keras
    (save_model has just rotated that file; a damaged model.keras is not rotated)."""
    latest = sidecar_path(run.model_path)
    previous = fingerprint(run.previous_model_path)
    try:
        with zipfile.ZipFile(latest) as archive:
            stored = Fingerprint(int(_member(archive, "keras_size")), _member(archive, "keras_sha256").tobytes())
        if stored == previous:
            os.replace(latest, sidecar_path(run.previous_model_path))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # no sidecar, or one of no use: nothing to keep


def _same(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> bool:
    return first.keys() == second.keys() and all(np.array_equal(first[name], second[name]) for name in first)


# -- reading: the sampler of a run ----------------------------------------------------------------
def load_sampler(run: RunDir, on_notice=None, rebuild: bool = True) -> tuple[Sampler, int]:
    """See RunDir.load_sampler. The sampler's `source` is the checkpoint file it came from."""
    config, vocab = run.load_config(), run.load_vocab()
    shapes = weight_shapes(len(vocab), config.layers, config.units)
    found = _weights_from_sidecars(run, shapes, config, len(vocab), on_notice)
    if found is None:
        return _sampler_from_keras(run, config, vocab, shapes, on_notice, rebuild)
    weights, source = found
    sampler = Sampler.from_weights(vocab, weights, lowercase=config.lowercase)
    sampler.source = source
    return sampler, sum(array.size for array in weights.values())


def load_sampler_from(run: RunDir, keras_path: Path) -> tuple[Sampler, int]:
    """(Sampler, parameter count) for one chosen checkpoint (`sample --checkpoint best` or
    a FILE), vetted exactly like the run's own: a regular file, the archive checked against
    the run's config, then its sidecar if it matches, else Keras in safe mode."""
    import stat

    from engine.compat import memoize_keras_skipsets
    from engine.tfsetup import keras

    config, vocab = run.load_config(), run.load_vocab()
    try:
        mode = os.lstat(keras_path).st_mode
    except OSError as error:
        raise RunDirError(f"cannot use the checkpoint {keras_path}: {error.strerror or error}") from None
    if not stat.S_ISREG(mode):
        raise RunDirError(f"cannot use the checkpoint {keras_path}: it is not a regular file")
    problem = archive_problem(keras_path, config, len(vocab))
    if problem:
        raise RunDirError(f"cannot use the checkpoint {keras_path}: {problem}")
    shapes = weight_shapes(len(vocab), config.layers, config.units)
    weights = _read_sidecar(keras_path, shapes)
    if weights is not None:
        sampler = Sampler.from_weights(vocab, weights, lowercase=config.lowercase)
        sampler.source = Path(keras_path)
        return sampler, sum(array.size for array in weights.values())
    memoize_keras_skipsets()
    try:
        model = keras().saving.load_model(keras_path, safe_mode=True, compile=False)
        sampler = Sampler.from_keras_model(model, vocab, lowercase=config.lowercase)
    except Exception as error:  # reported, never executed around
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise RunDirError(f"cannot use the checkpoint {keras_path}: {first_line}") from None
    sampler.source = Path(keras_path)
    return sampler, int(model.count_params())


def _weights_from_sidecars(run: RunDir, shapes, config, vocab_size: int,
                           on_notice) -> tuple[dict[str, np.ndarray], Path] | None:
    """The fast path, taking the same decisions as RunDir.load_model (the same vetting of
    the archive, network included): model.keras if it is whole, else model.prev.keras
    with a notice; None where only Keras can tell. With the weights, the file they match."""
    if run.model_path.exists():
        latest_problem = archive_problem(run.model_path, config, vocab_size)
        if latest_problem is None:
            weights = _read_sidecar(run.model_path, shapes)  # None: Keras decides, may fall back itself
            return (weights, run.model_path) if weights is not None else None
    else:
        latest_problem = "missing"
    if not run.previous_model_path.exists() or \
            archive_problem(run.previous_model_path, config, vocab_size) is not None:
        return None
    weights = _read_sidecar(run.previous_model_path, shapes)
    if weights is None:
        return None
    if on_notice is not None:
        on_notice(fallback_notice(f"model.keras: {latest_problem}"))
    return weights, run.previous_model_path


def _sampler_from_keras(run: RunDir, config, vocab, shapes, on_notice, rebuild: bool) -> tuple[Sampler, int]:
    """The slow path, as before: Keras loads the checkpoint (vetted, safe mode)."""
    versions_before = {path: _file_version(path) for path in (run.model_path, run.previous_model_path)}
    notices: list[str] = []
    model = run.load_model(compile=False, on_notice=notices.append)
    for message in notices:
        if on_notice is not None:
            on_notice(message)
    try:
        sampler = Sampler.from_keras_model(model, vocab, lowercase=config.lowercase)
    except ValueError as error:
        raise RunDirError(f"{run.path} cannot be sampled: {error}") from None
    loaded = run.previous_model_path if notices else run.model_path  # the notice says it fell back
    sampler.source = loaded
    if rebuild:
        _rebuild(run, model, loaded, versions_before[loaded], shapes)
    return sampler, int(model.count_params())


def _rebuild(run: RunDir, model, keras_path: Path, version_before: _FileVersion | None, shapes) -> None:
    """Write the sidecar of `keras_path` from the model Keras loaded from it, if that file
    did not change while Keras read it and this process may write to the run directory."""
    if version_before is None or not _may_write(run) or _file_version(keras_path) != version_before:
        return
    weights = weights_of(model)
    if weights is None or {name: array.shape for name, array in weights.items()} != shapes:
        return
    if not all(array.dtype in _WEIGHT_DTYPES and np.isfinite(array).all() for array in weights.values()):
        return
    try:
        atomic_write_bytes(sidecar_path(keras_path), encode(weights, version_before.fingerprint))
    except RunDirError:
        pass  # a cache only: the next reader takes the Keras path again


def _may_write(run: RunDir) -> bool:
    """Readers rebuild a sidecar only where they may write and no trainer is at work: a
    read-only user never writes, and a trainer writes its own sidecars."""
    if run.acquired:
        return True
    return os.access(run.path, os.W_OK) and not _locked_by_another_process(run.lock_path)


def _locked_by_another_process(lock_path: Path) -> bool:
    """Whether a trainer holds the run's flock. A shared lock is tried and dropped at once:
    a trainer starting in that instant is told the run is in use, a risk of microseconds."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return False  # no trainer has ever run here
    except OSError:
        return True  # cannot tell: do not write
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
