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
                   the weights exactly as Keras holds them (engine.modeling.sampler.keras_weights)

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

import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import RunDirError
from engine.files.safeio import atomic_write_bytes, open_run_file
from engine.modeling.sampler import keras_weights

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
class FileVersion:
    """One version of a file: replaced files get a new inode, so a load that started and
    ended with the same version read exactly these bytes."""
    inode: int
    mtime_ns: int
    fingerprint: Fingerprint


def fingerprint(path: Path) -> Fingerprint | None:
    version = file_version(path)
    return version.fingerprint if version else None


def file_version(path: Path) -> FileVersion | None:
    digest = hashlib.sha256()
    try:
        with open_run_file(path) as handle:  # a regular file only: never a FIFO that would hang
            status = os.fstat(handle.fileno())
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except (OSError, RunDirError):
        return None
    return FileVersion(status.st_ino, status.st_mtime_ns, Fingerprint(status.st_size, digest.digest()))


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


def read_weights(keras_path: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray] | None:
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


def write_after_save(model_path: Path, previous_model_path: Path, model,
                     weights_before_save: dict[str, np.ndarray] | None) -> None:
    """Called by checkpoints.save_model once model.keras is in place: rotate the previous
    sidecar with model.prev.keras, then write the new one. It is written only if the model
    held the same weights before and after the save (so it holds what the file holds), and
    never fails the checkpoint: without a sidecar, readers take the Keras path."""
    _rotate(model_path, previous_model_path)
    weights = weights_of(model)
    if weights is None or weights_before_save is None or not _same(weights, weights_before_save):
        return
    source = fingerprint(model_path)
    if source is None or not all(np.isfinite(array).all() for array in weights.values()):
        return
    try:
        atomic_write_bytes(sidecar_path(model_path), encode(weights, source))
    except RunDirError:
        pass  # a full disk: the next checkpoint (which will report it) retries


def _rotate(model_path: Path, previous_model_path: Path) -> None:
    """model.sampler.npz becomes model.prev.sampler.npz if it belongs to model.prev.keras
    (save_model has just rotated that file; a damaged model.keras is not rotated)."""
    latest = sidecar_path(model_path)
    previous = fingerprint(previous_model_path)
    try:
        with zipfile.ZipFile(latest) as archive:
            stored = Fingerprint(int(_member(archive, "keras_size")),
                                 _member(archive, "keras_sha256").tobytes())
        if stored == previous:
            os.replace(latest, sidecar_path(previous_model_path))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # no sidecar, or one of no use: nothing to keep


def _same(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> bool:
    return first.keys() == second.keys() and all(np.array_equal(first[name], second[name]) for name in first)




def rebuild(keras_path: Path, model, version_before: FileVersion | None, shapes) -> None:
    """Write the sidecar of `keras_path` from the model Keras loaded from it, if that file
    did not change while Keras read it (the caller has decided it may write there)."""
    if version_before is None or file_version(keras_path) != version_before:
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
