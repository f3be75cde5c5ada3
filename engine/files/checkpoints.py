"""Checkpoints: the model and its sampler's sidecar, written and loaded in a run directory.

    model.keras       weights + optimizer state (the step count lives in the optimizer)
    model.prev.keras  the checkpoint before it, kept in case the newest is damaged
    model.best.keras  the epoch-end checkpoint with the lowest held-out loss (a hard link)
    model.epoch-NNNN.keras  kept by --keep-every (hard links)
    model.sampler.npz, ...  each one's sampler weights in numpy (engine/files/sidecar.py)

A checkpoint is saved to a temporary name and renamed into place, the previous one
linked to model.prev.keras first, so model.keras never goes missing; a damaged one is
never rotated. Every archive is vetted (engine/files/vetting.py) before Keras reads it, and
Keras loads it in safe mode.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from pathlib import Path

import numpy as np

from engine.compat import memoize_keras_skipsets
from engine.errors import RunDirError
from engine.files import sidecar
from engine.files.rundir import RunDir
from engine.files.safeio import explain_os_error, fsync_dir, os_error_in, remove_names
from engine.files.vetting import archive_problem, fallback_notice
from engine.modeling.sampler import Sampler, reading_for, weight_shapes
from engine.tfsetup import keras


def _reads_as_trained(config) -> dict:
    """A run's sampler reads text as the run was trained to: its case and its windows."""
    return {"lowercase": config.lowercase, "reading": reading_for(config)}


def save_model(run: RunDir, model) -> None:
    """Write model.keras atomically, keeping the previous checkpoint as model.prev.keras.

    A damaged model.keras is never rotated into model.prev.keras: the previous good
    checkpoint stays there. The sampler's sidecar is written beside it (engine/files/sidecar.py)."""
    weights = sidecar.weights_of(model)  # compared after the save: the sidecar holds what the file holds
    temporary = run.path / f".model-{os.getpid()}.tmp.keras"  # Keras wants the suffix
    memoize_keras_skipsets()
    try:
        with contextlib.suppress(FileNotFoundError):  # Keras opens it by name: no link may be there
            temporary.unlink()
        try:
            model.save(temporary)
        except Exception as error:  # Keras may wrap the OSError of a full disk
            raise os_error_in(error) or RunDirError(
                f"could not save the checkpoint {run.model_path}: {error}") from None
        fd = os.open(temporary, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        # Link, not move: model.keras never goes missing. A damaged one is not kept.
        if run.model_path.exists() and _model_intact(run):
            previous_temporary = run.path / f".model-prev-{os.getpid()}.tmp"
            with contextlib.suppress(FileNotFoundError):
                previous_temporary.unlink()
            os.link(run.model_path, previous_temporary)
            os.replace(previous_temporary, run.previous_model_path)
        os.replace(temporary, run.model_path)
    except (OSError, RunDirError) as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        if isinstance(error, RunDirError):
            raise
        raise explain_os_error(error, "save the checkpoint", run.model_path) from None
    run.damaged_model = False
    fsync_dir(run.path)
    sidecar.write_after_save(run.model_path, run.previous_model_path, model, weights)


def keep_best(run: RunDir) -> None:
    """model.keras, just saved, has the lowest held-out loss so far: keep it as
    model.best.keras (with its sidecar)."""
    _keep_as(run, run.best_model_path)


def keep_epoch(run: RunDir, epoch: int, keep_max: int) -> Path:
    """Keep model.keras, just saved at the end of `epoch`, as model.epoch-NNNN.keras
    (with its sidecar), and remove the oldest such files beyond `keep_max` (only those
    names, never through a link): a bound on the disk they take."""
    kept = run.path / f"model.epoch-{epoch:04d}.keras"
    _keep_as(run, kept)
    epochs = sorted({int(match.group(1)) for match in map(run.EPOCH_NAME.fullmatch, os.listdir(run.path))
                     if match})
    old = set(epochs[:-keep_max]) if keep_max < len(epochs) else set()
    if old:
        remove_names(run.path, lambda name: bool((match := run.EPOCH_NAME.fullmatch(name))
                                                 and int(match.group(1)) in old), follow_link=True)
    return kept


def _keep_as(run: RunDir, kept: Path) -> None:
    """A hard link of model.keras (whole and vetted: just saved) and its sidecar, renamed
    into place as `kept`: atomic, and no extra disk."""
    pairs = [(run.model_path, kept), (sidecar.sidecar_path(run.model_path), sidecar.sidecar_path(kept))]
    try:
        # The old best's sidecar goes first: a stale one must never sit beside the new best.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pairs[1][1])
        for source, target in pairs:
            if not os.path.lexists(source):
                continue
            temporary = run.path / f".model-best-{os.getpid()}.tmp"
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            os.link(source, temporary, follow_symlinks=False)
            os.replace(temporary, target)
    except OSError as error:
        raise explain_os_error(error, "keep the checkpoint as", kept) from None
    fsync_dir(run.path)


def in_training(run: RunDir) -> bool:
    """Whether a process holds the run directory's lock now (read only: nothing written)."""
    try:
        fd = os.open(run.lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # (drops the shared lock taken just to ask)
    return False


def default_checkpoint(run: RunDir) -> str:
    """What a reader samples from when not told: "best" (model.best.keras, the lowest
    held-out loss) once the run has stopped and kept one, since a run's last epochs may
    overfit; "latest" while a process trains it (the newest is what is watched) or where
    no best was kept."""
    return "best" if run.best_model_path.exists() and not in_training(run) else "latest"


def checkpoint_path(run: RunDir, choice: str | None) -> Path:
    """`latest`, `best` or a FILE for `sample --checkpoint` (None: default_checkpoint)."""
    choice = choice or default_checkpoint(run)
    if choice == "latest":
        return run.model_path
    if choice == "best":
        if not run.best_model_path.exists():
            raise RunDirError(f"{run.path} has no model.best.keras yet (it is kept from the first "
                              "epoch end with a held-out loss); use --checkpoint latest")
        return run.best_model_path
    return Path(choice)


def _model_intact(run: RunDir) -> bool:
    return not run.damaged_model and archive_problem(run.model_path) is None


def load_model(run: RunDir, compile: bool = True, on_notice=None):
    """The newest loadable checkpoint (safe_mode: nothing in it is executed).

    If model.keras is damaged and model.prev.keras loads, `on_notice(message)` is told
    so; neither file is changed or deleted."""
    # The archive is checked against the run's settings before Keras (or TensorFlow) is
    # even imported: a hostile file costs neither memory nor time.
    config, vocab = run.load_config(), run.load_vocab()
    errors = []
    for path in (run.model_path, run.previous_model_path):
        if not os.path.lexists(path):
            continue
        try:
            problem = archive_problem(path, config, len(vocab))
            if problem:
                raise ValueError(problem)
            keras()
            memoize_keras_skipsets()
            model = keras().saving.load_model(path, safe_mode=True, compile=compile)
        except Exception as error:  # any failure to load is reported, never executed around
            why = str(error).splitlines()[0] if str(error) else type(error).__name__
            errors.append(f"{path.name}: {why}")
            if path == run.model_path:
                run.damaged_model = True
            continue
        if path != run.model_path and on_notice is not None:
            on_notice(fallback_notice(errors[0] if errors else "model.keras: missing"))
        return model
    if not errors:
        raise RunDirError(f"{run.path} has no checkpoint (model.keras) yet")
    raise RunDirError(f"no loadable checkpoint in {run.path} ({'; '.join(errors)})")


def best_weights(run: RunDir) -> list:
    """The Keras weights of model.best.keras, vetted like the run's own checkpoint (the
    archive checked against the run's config, then Keras in safe mode), for a run set
    back to its best (engine/run/patience.py). RunDirError says why they cannot be read."""
    path = run.best_model_path
    problem = archive_problem(path, run.load_config(), len(run.load_vocab())) if path.is_file() \
        else "it is missing"
    if problem:
        raise RunDirError(f"cannot read the best checkpoint {path}: {problem}")
    memoize_keras_skipsets()
    try:
        return keras().saving.load_model(path, safe_mode=True, compile=False).get_weights()
    except Exception as error:  # reported, never executed around
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise RunDirError(f"cannot read the best checkpoint {path}: {first_line}") from None


def load_sampler(run: RunDir, on_notice=None, rebuild_sidecar: bool = True) -> tuple[Sampler, int]:
    """(Sampler, parameter count) for the newest loadable checkpoint, like load_model,
    but without TensorFlow when the checkpoint's numpy sidecar matches it.

    Otherwise Keras loads the checkpoint (vetted, safe mode) and, if `rebuild_sidecar`,
    the directory is writable and no trainer holds it, the sidecar is rebuilt for the
    next reader. `on_notice(message)` is told if model.prev.keras was used. Raises
    RunDirError as load_model does, and if the model cannot be sampled. The sampler's
    `source` is the checkpoint file it came from."""
    config, vocab = run.load_config(), run.load_vocab()
    shapes = weight_shapes(len(vocab), config.layers, config.units)
    found = _weights_from_sidecars(run, shapes, config, len(vocab), on_notice)
    if found is None:
        return _sampler_from_keras(run, config, vocab, shapes, on_notice, rebuild_sidecar)
    weights, source = found
    sampler = Sampler.from_weights(vocab, weights, **_reads_as_trained(config))
    sampler.source = source
    return sampler, sum(array.size for array in weights.values())


def load_sampler_from(run: RunDir, keras_path: Path) -> tuple[Sampler, int]:
    """(Sampler, parameter count) for one chosen checkpoint (`sample --checkpoint best` or
    a FILE), vetted exactly like the run's own: a regular file, the archive checked against
    the run's config, then its sidecar if it matches, else Keras in safe mode."""
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
    weights = sidecar.read_weights(keras_path, shapes)
    if weights is not None:
        sampler = Sampler.from_weights(vocab, weights, **_reads_as_trained(config))
        sampler.source = Path(keras_path)
        return sampler, sum(array.size for array in weights.values())
    memoize_keras_skipsets()
    try:
        model = keras().saving.load_model(keras_path, safe_mode=True, compile=False)
        sampler = Sampler.from_keras_model(model, vocab, **_reads_as_trained(config))
    except Exception as error:  # reported, never executed around
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise RunDirError(f"cannot use the checkpoint {keras_path}: {first_line}") from None
    sampler.source = Path(keras_path)
    return sampler, int(model.count_params())


def _weights_from_sidecars(run: RunDir, shapes, config, vocab_size: int,
                           on_notice) -> tuple[dict[str, np.ndarray], Path] | None:
    """The fast path, taking the same decisions as load_model (the same vetting of
    the archive, network included): model.keras if it is whole, else model.prev.keras
    with a notice; None where only Keras can tell. With the weights, the file they match."""
    if run.model_path.exists():
        latest_problem = archive_problem(run.model_path, config, vocab_size)
        if latest_problem is None:
            # None: Keras decides, and may fall back itself
            weights = sidecar.read_weights(run.model_path, shapes)
            return (weights, run.model_path) if weights is not None else None
    else:
        latest_problem = "missing"
    if not run.previous_model_path.exists() or \
            archive_problem(run.previous_model_path, config, vocab_size) is not None:
        return None
    weights = sidecar.read_weights(run.previous_model_path, shapes)
    if weights is None:
        return None
    if on_notice is not None:
        on_notice(fallback_notice(f"model.keras: {latest_problem}"))
    return weights, run.previous_model_path


def _sampler_from_keras(run: RunDir, config, vocab, shapes, on_notice, rebuild: bool) -> tuple[Sampler, int]:
    """The slow path, as before: Keras loads the checkpoint (vetted, safe mode)."""
    versions_before = {path: sidecar.file_version(path) for path in (run.model_path, run.previous_model_path)}
    notices: list[str] = []
    model = load_model(run, compile=False, on_notice=notices.append)
    for message in notices:
        if on_notice is not None:
            on_notice(message)
    try:
        sampler = Sampler.from_keras_model(model, vocab, **_reads_as_trained(config))
    except ValueError as error:
        raise RunDirError(f"{run.path} cannot be sampled: {error}") from None
    loaded = run.previous_model_path if notices else run.model_path  # the notice says it fell back
    sampler.source = loaded
    if rebuild and _may_write(run):
        sidecar.rebuild(loaded, model, versions_before[loaded], shapes)
    return sampler, int(model.count_params())


def _may_write(run: RunDir) -> bool:
    """Readers rebuild a sidecar only where they may write and no trainer is at work: a
    read-only user never writes, and a trainer writes its own sidecars."""
    if run.acquired:
        return True
    return os.access(run.path, os.W_OK) and not run.locked_by_another_process()
