"""Checkpoint vetting: whether a model.keras file is one charlm-tui wrote, told without Keras.

Nothing from a run directory is ever executed: an archive is refused before Keras (or
TensorFlow) is imported if its members, declared sizes or compression methods are not
those of our checkpoints, if a CRC fails, if its HDF5 weights file declares more data
than a model of the run's size holds or points outside itself, or if its config names
an object engine.modeling.model.build_model could not have made.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from pathlib import Path

from engine.compat import saved_optimizer_step
from engine.config import TrainConfig
from engine.errors import RunDirError
from engine.files.safeio import READ_CHUNK_BYTES, open_run_file
from engine.modeling.model import architecture_problem, parameter_count

# What a checkpoint written by engine.modeling.model.build_model may contain. Anything else in
# model.keras (a Lambda layer holding bytecode, a custom class, a function from another
# module) is refused before Keras sees it: nothing from a run directory is ever executed,
# whatever the Keras version's own safe_mode covers.
ARCHIVE_MEMBERS = {"metadata.json", "config.json", "model.weights.h5"}
KERAS_CLASSES = {
    "Functional", "InputLayer", "Reshape", "CategoryEncoding", "LSTM",
    "LSTMCell", "Dropout", "Dense", "Adam", "RMSprop", "LossScaleOptimizer",
    "DTypePolicy", "FloatDTypePolicy", "Policy",
    "GlorotUniform", "Orthogonal", "Zeros", "Ones", "__keras_tensor__",
}
MAX_CONFIG_BYTES = 4 << 20
MAX_METADATA_BYTES = 1 << 20
# Keras stores the members uncompressed; a zip tool may have deflated them. Nothing else
# is ever decompressed: bzip2 and LZMA reach a million to one, so 2 KB of either can
# fill the memory. Every size is checked as the archive declares it before a byte is
# decompressed, and reading stops at the declared sizes.
ARCHIVE_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
METHOD_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA"}
MAX_DEFLATE_RATIO = 100            # ours deflate ~1.1:1 (weights) to ~10:1 (JSON)
MAX_CHECKPOINT_BYTES = 8 << 30     # the weights of any run, whatever its settings say
MAX_WEIGHT_OBJECTS = 10_000        # groups and datasets in model.weights.h5 (ours: a few dozen)


def checkpoint_bytes_bound(config: TrainConfig, vocab_size: int) -> int:
    """The most bytes the weights file of this run's checkpoint may declare: the weights
    and the optimizer's slots (three float32 copies at most: Adam's two moments), four
    times over for HDF5's bookkeeping, plus 1 MiB; never more than MAX_CHECKPOINT_BYTES."""
    return min(MAX_CHECKPOINT_BYTES, 4 * 3 * 4 * parameter_count(vocab_size, config) + (1 << 20))


def archive_problem(path: Path, config: TrainConfig | None = None,
                    vocab_size: int | None = None) -> str | None:
    """Why `path` is not a loadable charlm-tui checkpoint, or None if it looks whole and
    holds only our layers (checked without Keras: declared sizes and compression methods,
    then CRCs, then config.json). Given the run's config and vocabulary size, the weights
    may be no larger than such a model needs (checkpoint_bytes_bound) and the network
    must be exactly the one engine.modeling.model.build_model makes for them."""
    weights_limit = MAX_CHECKPOINT_BYTES if config is None else checkpoint_bytes_bound(config, vocab_size)
    file_limit = weights_limit + MAX_CONFIG_BYTES + MAX_METADATA_BYTES + (64 << 10)  # + zip headers
    try:
        with open_run_file(path, file_limit) as handle, zipfile.ZipFile(handle) as archive:
            problem = _members_problem(archive.infolist(), weights_limit) or _damaged_member(archive)
            if problem is None and config is not None:  # loading, not checking our own save
                problem = _weights_problem(archive, weights_limit)
            if problem:
                return problem
            keras_config = json.loads(archive.read("config.json"))
    except FileNotFoundError:
        return "missing"
    except RunDirError as error:  # a link, a FIFO, a device, or far too large
        return str(error)
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, NotImplementedError):
        return "not a .keras archive (truncated or damaged)"
    except (ValueError, RecursionError):
        return "its config.json is damaged"
    problem = _foreign_object(keras_config)
    if problem is None and config is not None:
        problem = architecture_problem(keras_config, config, vocab_size)
    return problem


def _members_problem(members: list[zipfile.ZipInfo], weights_limit: int) -> str | None:
    """What is wrong with the archive's directory: its names, declared sizes, methods."""
    limits = {"metadata.json": MAX_METADATA_BYTES, "config.json": MAX_CONFIG_BYTES,
              "model.weights.h5": weights_limit}
    names = [member.filename for member in members]
    if not {"config.json", "model.weights.h5"} <= set(names):
        return "not a complete .keras archive"
    if set(names) - ARCHIVE_MEMBERS:
        return f"unexpected files in the archive ({', '.join(sorted(set(names) - ARCHIVE_MEMBERS))})"
    if len(names) != len(set(names)):
        return "the archive lists a file twice"
    for member in members:
        name, size = member.filename, member.file_size
        if member.compress_type not in ARCHIVE_METHODS:
            method = METHOD_NAMES.get(member.compress_type, f"method {member.compress_type}")
            return (f"{name} in the archive is compressed with {method}; charlm-tui checkpoints are "
                    "stored or deflated, and other methods can hide a decompression bomb")
        if member.flag_bits & 0x1:
            return f"{name} in the archive is encrypted"
        if size > limits[name]:
            return (f"{name} in the archive declares {size:,} bytes, more than a checkpoint of this "
                    f"run ever holds ({limits[name]:,} at most)")
        if member.compress_type == zipfile.ZIP_STORED and member.compress_size != size:
            return f"{name} in the archive is damaged (its stored and declared sizes differ)"
        if size > MAX_DEFLATE_RATIO * max(member.compress_size, 1):
            return (f"{name} in the archive declares {size:,} bytes from {member.compress_size:,} "
                    "compressed, a ratio no checkpoint has (a decompression bomb?)")
    return None


def _damaged_member(archive: zipfile.ZipFile) -> str | None:
    """The first member whose CRC does not match, read a chunk at a time; zipfile stops
    each read at the size the directory declares, which _members_problem has bounded."""
    for member in archive.infolist():
        try:
            with archive.open(member) as data:
                while data.read(READ_CHUNK_BYTES):
                    pass
        except zipfile.BadZipFile:
            return f"{member.filename} in the archive is damaged (CRC mismatch)"
    return None


def _weights_problem(archive: zipfile.ZipFile, limit: int) -> str | None:
    """What in model.weights.h5 could make reading it cost more than `limit` bytes or
    reach outside it: an HDF5 dataset declares its shape apart from what it stores (a
    few KB can declare gigabytes of fill value), and may point at other files. Checked
    with h5py, which runs nothing from the file, before Keras reads a single weight."""
    import h5py

    declared, objects = 0, 0
    try:
        with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as weights:
            groups = [weights]
            while groups:
                group = groups.pop()
                for name in group:
                    objects += 1
                    if objects > MAX_WEIGHT_OBJECTS:
                        return "its weights file holds far more objects than a charlm-tui model has"
                    if not isinstance(group.get(name, getlink=True), h5py.HardLink):
                        return "its weights file links to other places or files"
                    item = group[name]
                    if isinstance(item, h5py.Group):
                        groups.append(item)
                        continue
                    if not isinstance(item, h5py.Dataset) or item.external or item.is_virtual:
                        return "its weights file holds data stored outside it"
                    declared += item.size * item.dtype.itemsize
                    if declared > limit:
                        return (f"its weights file declares more than {limit:,} bytes of weights, more "
                                "than a model of this run's size holds")
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return f"its weights file is damaged ({reason})"
    return None


def checkpoint_step(path: Path) -> int | None:
    """The optimizer step a checkpoint was saved at, read without Keras from its weights
    file (engine/compat.py knows where Keras keeps it), or None if that cannot be told.
    For a checkpoint that archive_problem has passed: its sizes are bounded by then."""
    import h5py

    try:
        with open_run_file(path) as handle, zipfile.ZipFile(handle) as archive:
            with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as weights:
                return saved_optimizer_step(weights)
    except (OSError, RunDirError, KeyError, ValueError, TypeError, RuntimeError, EOFError,
            zipfile.BadZipFile, zlib.error, NotImplementedError):
        return None


def _foreign_object(node) -> str | None:
    """The first serialized object in a Keras config that build_model could not have made."""
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if "class_name" in node:
                name, module = node.get("class_name"), node.get("module")
                if name in ("Lambda", "__lambda__"):
                    return ("it contains a Lambda layer, i.e. Python code; charlm-tui never runs code "
                            "from a run directory (models load in Keras safe mode)")
                from_keras = module is None or (isinstance(module, str) and module.split(".")[0] == "keras")
                if name not in KERAS_CLASSES or not from_keras:
                    return (f"it contains {name!r} from {module!r}, which a charlm-tui model never holds; "
                            "refused (nothing from a run directory is executed)")
                if node.get("registered_name") not in (None, name):
                    return f"it contains a custom object {node.get('registered_name')!r}; refused"
            stack.extend(node.values())
    return None


def fallback_notice(why: str) -> str:
    """What a reader is told when model.keras could not be used and model.prev.keras was."""
    return (f"could not load the latest checkpoint ({why}); using the previous one, "
            f"model.prev.keras, instead (both files are kept)")
