"""Load a text corpus and encode it as one integer id per character.

The book reads the whole file, lower-cases it and takes `sorted(set(text))` as the
vocabulary. This module gives the same vocabulary and the same characters, but reads in
chunks so a 1 GB file costs about the size of its ids array (one byte per character for
up to 256 distinct characters), never several copies of the text as Python strings:

    pass 1: decode each chunk, lower-case it, mark which code points occur;
    pass 2: decode again and write each chunk's ids into one preallocated array.

Anything that cannot be used (missing, empty, binary, badly encoded...) raises a
CorpusError with one sentence that says what to do. Nothing here prints.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import shutil
import stat
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from engine.config import TrainConfig
from engine.data import pydocs
from engine.data.textfiles import CHUNK_BYTES, Progress, Source, codec, inspect, strerror, text_chunks
from engine.errors import CorpusError
from engine.tfsetup import keras as quiet_keras

DEFAULT_CORPUS = "nietzsche"
MAX_VOCAB = 10_000          # more distinct characters than this is not a text to learn from

NIETZSCHE_FILE = "nietzsche.txt"
NIETZSCHE_URL = "https://s3.amazonaws.com/text-datasets/nietzsche.txt"
DOWNLOAD_TIMEOUT = 10.0     # seconds; a stalled connection must not hang the app

_UNICODE_SIZE = 0x110000    # code points run from 0 to 0x10FFFF



@dataclass(frozen=True, eq=False)
class Corpus:
    """A text as ids into its vocabulary; slices are decoded back to text on demand."""

    name: str               # "nietzsche", "pydocs", a corpora/ stem, a file stem or folder name
    source: str             # the path read, or a description ("Python 3.11 stdlib docstrings")
    vocab: tuple[str, ...]  # sorted(set(text)), as the book builds it
    ids: np.ndarray         # one id per character: uint8 for up to 256 characters, else uint16
    lowercase: bool

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (f"Corpus(name={self.name!r}, chars={len(self):,}, vocab={len(self.vocab)}, "
                f"lowercase={self.lowercase})")

    @property
    def nbytes(self) -> int:
        return self.ids.nbytes

    @functools.cached_property
    def _vocab_codes(self) -> np.ndarray:
        return np.array([ord(char) for char in self.vocab], dtype=np.uint32)

    def text(self, start: int = 0, stop: int | None = None) -> str:
        return self.decode(self.ids[start:stop])

    def decode(self, ids) -> str:
        ids = np.atleast_1d(np.asarray(ids))
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.vocab)):
            raise ValueError(f"ids must be between 0 and {len(self.vocab) - 1}")
        return _text_of(self._vocab_codes[ids.astype(np.intp)])

    def encode(self, text: str) -> np.ndarray:
        """The ids of `text` (lower-cased first if the corpus is)."""
        if self.lowercase:
            text = text.lower()
        codes = _code_points(text)
        positions = np.searchsorted(self._vocab_codes, codes)
        positions = np.minimum(positions, len(self.vocab) - 1)
        known = self._vocab_codes[positions] == codes
        if not known.all():
            unknown = list(dict.fromkeys(chr(code) for code in codes[~known]))
            shown = ", ".join(repr(char) for char in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise CorpusError(f"not in the vocabulary of the {self.name} corpus: {shown}{more}")
        return positions.astype(self.ids.dtype)

    def random_text(self, length: int, rng: np.random.Generator) -> str:
        """A slice of `length` characters from a random place (the whole text if shorter)."""
        length = max(0, min(length, len(self)))
        start = int(rng.integers(0, len(self) - length + 1))
        return self.text(start, start + length)


# ---------------------------------------------------------------------------------------
# What a run records of its training text


def text_digest(corpus: Corpus) -> str:
    """The SHA-256 of the text as trained (after lower-casing, whatever its encoding or
    files): the vocabulary, then every character's id, two bytes little-endian."""
    digest = hashlib.sha256(json.dumps(list(corpus.vocab)).encode())
    for start in range(0, len(corpus.ids), CHUNK_BYTES):  # a chunk's copy at a time, not the text's
        digest.update(corpus.ids[start:start + CHUNK_BYTES].astype("<u2").view(np.uint8))
    return digest.hexdigest()


def source_bytes(source: str | os.PathLike) -> int | None:
    """How many bytes a corpus file, or a folder's .txt files, hold on disk (what would
    be read); None for what is neither (a built-in's description)."""
    try:
        path = Path(source)
        if path.is_file():
            return path.stat().st_size
        if path.is_dir():
            return sum(file.stat().st_size for file in _folder_files(path))
    except (OSError, ValueError, CorpusError):
        pass
    return None


def corpus_notes(corpus: Corpus) -> dict:
    """What a run keeps of the text it learns from, to find it again for sure: the
    absolute path read (None for a built-in), and a fingerprint, its size on disk and
    the digest of the text (engine/run/follow.py training_text uses a text only when both
    match: a relative path means another file from another folder)."""
    path = os.path.abspath(corpus.source) if os.path.exists(corpus.source) else None
    return {"path": path, "fingerprint": {"bytes": source_bytes(path) if path else None,
                                          "sha256": text_digest(corpus)}}


# ---------------------------------------------------------------------------------------
# Finding a corpus


def default_corpora_dir() -> Path:
    """$CHARLM_CORPORA, else ./corpora if there is one, else the project's corpora/."""
    if os.environ.get("CHARLM_CORPORA"):
        return Path(os.environ["CHARLM_CORPORA"]).expanduser()
    local = Path.cwd() / "corpora"
    if local.is_dir():
        return local
    return Path(__file__).resolve().parents[2] / "corpora"


def named_corpora(corpora_dir: Path | None = None) -> dict[str, str]:
    """Every name `load_corpus` accepts, with a short description (or the file's path).

    A corpora/ file named like a built-in replaces it (corpora/nietzsche.txt makes the
    book's corpus available offline).
    """
    names = {
        "nietzsche": "Nietzsche's Beyond Good and Evil, the book's corpus (downloaded by Keras)",
        "pydocs": f"the docstrings of Python's standard library ({pydocs.DESCRIPTION})",
    }
    for stem, path in _corpora_files(corpora_dir).items():
        names[stem] = str(path)
    return names


def is_on_disk(name: str) -> bool:
    """Whether a built-in named corpus can be read without a download or a build
    (the app's picker measures only those up front)."""
    if name == "nietzsche":
        return _cached_nietzsche() is not None
    if name == "pydocs":
        return pydocs.is_cached()
    return True


@dataclass(frozen=True)
class Availability:
    """What `load_corpus(spec)` would take now, asked before loading (the app's picker)."""

    builtin: str | None = None  # the built-in named corpus `spec` loads; None: a file, folder or nothing
    first_use: str | None = None  # "download" or "build" before it can be read; None: just reading
    url: str | None = None        # where a download would come from
    fallback: str | None = None   # the corpus load_corpus reads instead if the download fails


def availability(spec: str | os.PathLike, corpora_dir: Path | None = None) -> Availability:
    """Whether loading `spec` needs a download or a build first, and what it falls back to:
    load_corpus's own order (a path, then corpora/<name>.txt, then a built-in). Nothing
    is read or fetched."""
    spec_text = os.fspath(spec)
    try:
        path = Path(spec_text).expanduser()
    except RuntimeError:
        path = Path(spec_text)
    if (spec_text.strip() and _path_kind(path) is not None) or spec_text in _corpora_files(corpora_dir):
        return Availability()
    if spec_text == "nietzsche":
        if _cached_nietzsche() is not None:
            return Availability("nietzsche")
        return Availability("nietzsche", "download", NIETZSCHE_URL, fallback="pydocs")
    if spec_text == "pydocs":
        return Availability("pydocs", None if pydocs.is_cached() else "build")
    return Availability()


def _corpora_files(corpora_dir: Path | None) -> dict[str, Path]:
    folder = Path(corpora_dir) if corpora_dir is not None else default_corpora_dir()
    try:
        files = sorted(path for path in folder.glob("*.txt") if path.is_file())
    except OSError:
        return {}  # an unreadable corpora folder offers no names; the built-ins remain
    return {path.stem: path for path in files}


def load_corpus(
    spec: str | os.PathLike,
    *,
    lowercase: bool = TrainConfig.lowercase,
    encoding: str | None = None,
    corpora_dir: Path | None = None,
    on_notice: Callable[[str], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Corpus:
    """Load a file, every *.txt in a folder, or a named corpus (see `named_corpora`).

    Case is kept unless `lowercase` (the book's recipe), as on the command line.

    `encoding` decodes user files (default UTF-8, BOM allowed). `on_notice(message)`
    hears about fallbacks; `on_progress(done, total)` counts bytes over both passes.
    """
    spec_text = os.fspath(spec)
    try:
        path = Path(spec_text).expanduser()
    except RuntimeError:  # "~someone" for a user that does not exist
        path = Path(spec_text)
    kind = _path_kind(path) if spec_text.strip() else None
    if kind == "file":
        return _load_files(path.stem, str(path), [path], lowercase, encoding, on_progress)
    if kind == "folder":
        return _load_files(path.resolve().name, str(path), _folder_files(path),
                           lowercase, encoding, on_progress)
    if kind == "other":
        raise CorpusError(_not_a_file_or_folder(spec_text))

    named_files = _corpora_files(corpora_dir)
    if spec_text in named_files:
        named = named_files[spec_text]
        return _load_files(spec_text, str(named), [named], lowercase, encoding, on_progress)
    if spec_text == "nietzsche":
        return _load_nietzsche(lowercase, on_notice, on_progress)
    if spec_text == "pydocs":
        return _load_files("pydocs", pydocs.DESCRIPTION, [_pydocs_file()], lowercase, None,
                           on_progress)
    raise CorpusError(_no_such_corpus(spec_text, corpora_dir))


def _not_a_file_or_folder(spec_text: str) -> str:
    return f"{spec_text} is not a regular file or folder"


def _no_such_corpus(spec_text: str, corpora_dir: Path | None) -> str:
    names = ", ".join(named_corpora(corpora_dir))
    return f"no such file, folder or named corpus: {spec_text} (named corpora: {names})"


def corpus_problem(spec: str | os.PathLike, corpora_dir: Path | None = None) -> str | None:
    """Why `spec` names no corpus at all, as load_corpus would say at once, or None when
    it names one (which may still be refused once read). Nothing is read: the app asks
    this before its screen opens."""
    spec_text = os.fspath(spec)
    try:
        path = Path(spec_text).expanduser()
    except RuntimeError:
        path = Path(spec_text)
    try:
        kind = _path_kind(path) if spec_text.strip() else None
    except CorpusError as error:
        return str(error)
    if kind == "other":
        return _not_a_file_or_folder(spec_text)
    if kind is not None or spec_text in named_corpora(corpora_dir):
        return None
    return _no_such_corpus(spec_text, corpora_dir)


def _path_kind(path: Path) -> str | None:
    """"file", "folder", "other" (a device, a pipe...) or None when there is nothing there."""
    try:
        mode = path.stat().st_mode
    except ValueError:  # a NUL in the name: no such path
        return None
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP):
            return None
        raise CorpusError(f"cannot read {path}: {strerror(error)}") from None
    if stat.S_ISREG(mode):
        return "file"
    return "folder" if stat.S_ISDIR(mode) else "other"


def _folder_files(folder: Path) -> list[Path]:
    try:
        files = sorted(path for path in folder.glob("*.txt") if path.is_file())
    except OSError as error:
        raise CorpusError(f"cannot read the folder {folder}: {strerror(error)}") from None
    if not files:
        raise CorpusError(f"the folder {folder} has no .txt files")
    return files


def _pydocs_file() -> Path:
    try:
        return pydocs.pydocs_path()
    except OSError as error:
        raise CorpusError(f"cannot build the pydocs corpus: {error}") from None


# ---------------------------------------------------------------------------------------
# The Nietzsche corpus, through the Keras download cache


def _load_nietzsche(lowercase, on_notice, on_progress) -> Corpus:
    path = _cached_nietzsche()
    reason = ""
    if path is None:
        path, reason = _download_nietzsche()
    if path is None:
        if on_notice is not None:
            on_notice(f"could not download the Nietzsche corpus ({reason}); using pydocs, "
                      "the docstrings of Python's standard library, instead (put "
                      f"{NIETZSCHE_FILE} in the corpora folder to use it offline)")
        return _load_files("pydocs", pydocs.DESCRIPTION, [_pydocs_file()], lowercase, None,
                           on_progress)
    return _load_files("nietzsche", str(path), [path], lowercase, None, on_progress)


def _keras_datasets_dirs() -> list[Path]:
    """Where keras.utils.get_file keeps downloads: $KERAS_HOME/datasets (~/.keras by
    default), or /tmp/.keras/datasets when that home is not writable, as Keras does."""
    if os.environ.get("KERAS_HOME"):
        home = Path(os.environ["KERAS_HOME"]).expanduser()
    else:
        home = Path.home() / ".keras"
    folders = [home / "datasets"]
    if home.exists() and not os.access(home, os.W_OK):
        folders.append(Path(tempfile.gettempdir()) / ".keras" / "datasets")
    return folders


def _cached_nietzsche() -> Path | None:
    for folder in _keras_datasets_dirs():
        path = folder / NIETZSCHE_FILE
        if path.is_file() and path.stat().st_size > 0:
            return path
    return None


def _download_nietzsche(timeout: float = DOWNLOAD_TIMEOUT) -> tuple[Path | None, str]:
    """Download with Keras, as the book does, in a thread we can stop waiting for.

    Returns (path, "") or (None, the reason). The file is fetched into a scratch folder
    and renamed into the cache when complete, so an abandoned or failed download never
    leaves half a file where the next run would take it for the corpus.
    """
    try:
        keras = quiet_keras()
    except Exception as error:  # a broken TensorFlow install must not stop the fallback
        return None, f"keras is not importable: {error}"

    target_dir = _keras_datasets_dirs()[-1]
    outcome: dict[str, object] = {}

    def fetch() -> None:
        try:
            # Thread-local in Keras: keeps get_file's progress bar off this terminal.
            keras.config.disable_interactive_logging()
            target_dir.mkdir(parents=True, exist_ok=True)
            scratch = tempfile.mkdtemp(prefix=".nietzsche-download-", dir=target_dir)
            try:
                fetched = keras.utils.get_file(NIETZSCHE_FILE, origin=NIETZSCHE_URL,
                                               cache_dir=scratch, cache_subdir="")
                os.replace(fetched, target_dir / NIETZSCHE_FILE)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            outcome["path"] = target_dir / NIETZSCHE_FILE
        except BaseException as error:  # reported to the caller, who falls back
            outcome["error"] = error

    # A daemon thread: if the connection stalls, we stop waiting and the process can
    # still exit; should the download finish later, the next run finds it in the cache.
    thread = threading.Thread(target=fetch, name="charlm-nietzsche-download", daemon=True)
    thread.start()
    thread.join(timeout)
    if "path" in outcome:
        return outcome["path"], ""  # type: ignore[return-value]
    if "error" in outcome:
        return None, _short_reason(outcome["error"])
    return None, f"no answer from {NIETZSCHE_URL} in {timeout:.0f} s"


def _short_reason(error: object) -> str:
    """The useful end of an error: Keras says "URL fetch failure on URL: None -- [Errno -2]
    Name or service not known"; the part after "--" is what the user needs."""
    lines = str(error).strip().splitlines()
    text = lines[0].rsplit(" -- ", 1)[-1].strip() if lines else ""
    return text[:200] or type(error).__name__


# ---------------------------------------------------------------------------------------
# Reading and encoding


def _load_files(name: str, source: str, paths: list[Path], lowercase: bool,
                encoding: str | None, on_progress) -> Corpus:
    chosen = codec(encoding)
    inputs = [inspect(path, chosen, explicit=encoding is not None) for path in paths]
    inputs = [item for item in inputs if item.size > item.start]
    if not inputs:
        what = f"every .txt file in {source}" if Path(source).is_dir() else source
        raise CorpusError(f"{what} is empty")

    progress = Progress(2 * sum(item.size for item in inputs), on_progress)

    # Pass 1: the vocabulary and the length. A text that arrives as one chunk is encoded
    # from this pass; larger ones are decoded again in pass 2 instead of being kept.
    seen = np.zeros(_UNICODE_SIZE, dtype=bool)
    length = chunks = 0
    first_codes = None
    for text in text_chunks(inputs, lowercase, progress):
        codes = _code_points(text)
        seen[codes] = True
        length += len(codes)
        chunks += 1
        first_codes = codes if chunks == 1 else None
    vocab_codes = np.flatnonzero(seen).astype(np.uint32)
    _check_text(source, length, vocab_codes)

    dtype = np.uint8 if len(vocab_codes) <= 256 else np.uint16
    id_of_code = np.zeros(_UNICODE_SIZE, dtype=dtype)
    id_of_code[vocab_codes] = np.arange(len(vocab_codes), dtype=dtype)

    if first_codes is not None:
        ids = id_of_code[first_codes]
    else:
        ids = _encode_again(inputs, lowercase, progress, seen, id_of_code, length, source)
    progress.finish()
    vocab = tuple(chr(code) for code in vocab_codes)
    return Corpus(name=name, source=source, vocab=vocab, ids=ids, lowercase=lowercase)


def _encode_again(inputs: list[Source], lowercase: bool, progress: Progress,
                  seen: np.ndarray, id_of_code: np.ndarray, length: int,
                  source: str) -> np.ndarray:
    """Pass 2: decode the files again, writing each chunk's ids into one array. A file
    that changed since pass 1 (other length, new characters) is refused."""
    ids = np.empty(length, dtype=id_of_code.dtype)
    position = 0
    for text in text_chunks(inputs, lowercase, progress):
        codes = _code_points(text)
        end = position + len(codes)
        if end > length or not seen[codes].all():
            raise CorpusError(f"{source} changed while it was being read; try again")
        ids[position:end] = id_of_code[codes]
        position = end
    if position != length:
        raise CorpusError(f"{source} changed while it was being read; try again")
    return ids


def _check_text(source: str, length: int, vocab_codes: np.ndarray) -> None:
    if length == 0:
        raise CorpusError(f"{source} has no text (it is empty)")
    if 0 in vocab_codes:
        raise CorpusError(f"{source} looks like binary data (it contains NUL bytes), not text")
    if len(vocab_codes) < 2:
        raise CorpusError(f"{source} has only one distinct character ({chr(vocab_codes[0])!r}); "
                          "a corpus needs at least 2 distinct characters")
    if len(vocab_codes) > MAX_VOCAB:
        raise CorpusError(f"{source} has {len(vocab_codes):,} distinct characters; "
                          f"the limit is {MAX_VOCAB:,}")


def _code_points(text: str) -> np.ndarray:
    # surrogatepass: a lone surrogate becomes a code point the vocabulary will not know,
    # instead of an encoding error.
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _text_of(code_points: np.ndarray) -> str:
    return code_points.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")


