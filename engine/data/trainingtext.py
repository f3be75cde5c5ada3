"""The text a saved run was trained on, found again on this machine, if it is here.

The app's random seed texts and the memorization check (how much of a sample is copied
from the training text) need the very text the run learnt from: it is used only when it
matches the fingerprint the run recorded (engine/data/corpus.py corpus_notes).
"""

from __future__ import annotations

import os
import stat

from engine.data.corpus import is_on_disk, load_corpus, named_corpora, source_bytes, text_digest
from engine.errors import CharlmError


def seed_corpus(saved, encoding: str | None = None):
    """The training text, for random seed texts and the memorization check, if it is on
    this machine (see training_text); None otherwise (the saved excerpts, or the model
    itself, provide seeds)."""
    return training_text(saved, encoding)[0]


NOT_HERE = "the training text is not on this machine, so the samples were not checked for copied text"


def training_text(saved, encoding: str | None = None):
    """(the very text the run was trained on, None) or (None, why not, in one sentence).

    A text is used only when it matches the fingerprint the run recorded (engine/data/corpus.py
    corpus_notes): at its absolute path, a regular file (or folder of them) of the recorded
    size, checked before a byte is read, so a crafted config.json cannot make this read
    anything else whole; then its digest, once read. A built-in (pydocs) is found by name.
    A run saved without a fingerprint (by an older version) names its text by the path as
    typed, which from another folder is another file: it is not guessed at."""
    meta = saved.corpus_meta
    recorded = meta.get("fingerprint")
    if not isinstance(recorded, dict) or not isinstance(recorded.get("sha256"), str):
        return None, ("the run was saved by an earlier charlm-tui, without a fingerprint of its training "
                      "text, so the text at its path may not be the one it learnt from: the samples were "
                      "not checked for copied text")
    path, name = meta.get("path"), meta.get("name")
    if isinstance(path, str) and path:
        problem = _not_the_recorded_file(path, recorded.get("bytes"))
        if problem:
            return None, problem
        spec, where = path, path
    elif isinstance(name, str) and name in named_corpora() and _on_disk(name, is_on_disk):
        spec, where = name, f"the {name} corpus"
    else:
        return None, NOT_HERE
    try:
        corpus = load_corpus(spec, lowercase=saved.config.lowercase, encoding=encoding)
    except CharlmError as error:
        return None, f"the training text could not be read ({error}), so the samples were not checked"
    if len(corpus) != meta.get("chars") or text_digest(corpus) != recorded["sha256"] \
            or not set(corpus.vocab) <= set(saved.vocab):
        return None, (f"{where} is no longer the text the run was trained on (it changed since), so the "
                      "samples were not checked for copied text")
    return corpus, None


MAX_TRAINING_TEXT_BYTES = 4 << 30  # what a run may claim its text holds (a 1 GiB corpus: 1.1 GiB)


def _not_the_recorded_file(path: str, recorded_bytes) -> str | None:
    """Why the file (or folder) at `path` cannot be the recorded text, seen from its size
    on disk alone; None when it may be. Nothing is read."""
    if not os.path.isabs(path):
        return NOT_HERE
    try:
        mode = os.stat(path).st_mode  # (--corpus may name a link: the trainer read through it)
    except (OSError, ValueError):
        return NOT_HERE
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return f"{path} is not a regular file, so the samples were not checked for copied text"
    if not isinstance(recorded_bytes, int) or isinstance(recorded_bytes, bool) \
            or not 0 < recorded_bytes <= MAX_TRAINING_TEXT_BYTES:
        return ("the run's record of its training text is damaged, so the samples were not checked for "
                "copied text")
    size = source_bytes(path)
    if size != recorded_bytes:
        return (f"{path} holds {size:,} bytes, not the {recorded_bytes:,} the run was trained on (it changed "
                "since), so the samples were not checked for copied text")
    return None


def _on_disk(name: str, is_on_disk) -> bool:
    try:
        return is_on_disk(name)
    except OSError:
        return False
