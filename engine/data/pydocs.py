"""A corpus every machine has: the docstrings of Python's standard library.

It is the fallback when the book's Nietzsche text cannot be downloaded. The source files
are parsed with `ast`, never imported, so building it runs no library code. The text is
cached once per Python version, because the standard library changes with it.
"""

from __future__ import annotations

import ast
import os
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Iterator

from engine.errors import CorpusError

MAX_CHARS = 1_400_000   # about the size of the book's corpus, twice over: plenty to learn from
MIN_DOCSTRING_CHARS = 40  # shorter ones are mostly "Return self." boilerplate
MIN_LETTER_FRACTION = 0.75  # letters and spaces: keeps prose, drops code examples and tables

# Folders of the standard library that are not the library proper (or are mostly code
# samples and test data, which read nothing like prose).
SKIPPED_FOLDERS = frozenset({
    "site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3",
    "turtledemo", "__pycache__",
})

_HAS_DOCSTRING = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)

PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
DESCRIPTION = f"Python {PYTHON_VERSION} stdlib docstrings"


def is_cached() -> bool:
    """Whether the text is built already (pydocs_path() would then cost nothing)."""
    return (_cache_dir() / f"pydocs-{PYTHON_VERSION}.txt").is_file()


def pydocs_path() -> Path:
    """The cached pydocs text file, built first if it is not there yet."""
    path = _cache_dir() / f"pydocs-{PYTHON_VERSION}.txt"
    if path.is_file() and path.stat().st_size > 0:
        return path
    text = build_pydocs_text()
    user_id = os.getuid() if hasattr(os, "getuid") else ""  # no getuid on Windows
    for folder in (path.parent, Path(tempfile.gettempdir()) / f"charlm-tui-{user_id}"):
        target = folder / path.name
        try:
            _write_atomically(target, text)
            return target
        except OSError:
            continue  # an unwritable cache folder: try the temporary folder instead
    raise CorpusError(f"cannot write the pydocs corpus to {path} or the temporary folder")


def build_pydocs_text() -> str:
    """Join the prose docstrings of the standard library, up to MAX_CHARS characters."""
    parts: list[str] = []
    seen: set[str] = set()
    size = 0
    for source_file in _stdlib_files(Path(sysconfig.get_paths()["stdlib"])):
        for docstring in _docstrings(source_file):
            if docstring in seen or not _looks_like_prose(docstring):
                continue
            seen.add(docstring)
            parts.append(docstring)
            size += len(docstring) + 2
            if size >= MAX_CHARS:
                return "\n\n".join(parts) + "\n"
    return "\n\n".join(parts) + "\n"


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "charlm-tui"


def _stdlib_files(root: Path) -> Iterator[Path]:
    """Every .py file under root, in a stable (sorted) order, skipping SKIPPED_FOLDERS."""
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if name not in SKIPPED_FOLDERS)
        for name in sorted(files):
            if name.endswith(".py"):
                yield Path(folder) / name


def _docstrings(source_file: Path) -> Iterator[str]:
    """The docstrings of the module, its classes and functions; none if it does not parse."""
    try:
        tree = ast.parse(source_file.read_bytes(), filename=str(source_file))
    except (OSError, SyntaxError, ValueError, UnicodeError, RecursionError, MemoryError):
        return
    yield from _docstrings_in(tree)


def _docstrings_in(node: ast.AST) -> Iterator[str]:
    """Docstrings in source order. Only statement bodies can hold one, so expressions
    (most of the tree) are never visited."""
    docstring = ast.get_docstring(node, clean=True)
    if docstring:
        yield docstring.strip()
    for child in ast.iter_child_nodes(node):
        if isinstance(child, _HAS_DOCSTRING):
            yield from _docstrings_in(child)


def _looks_like_prose(docstring: str) -> bool:
    if len(docstring) < MIN_DOCSTRING_CHARS or ">>>" in docstring:
        return False
    letters = sum(char.isalpha() or char == " " for char in docstring)
    return letters / len(docstring) >= MIN_LETTER_FRACTION


def _write_atomically(path: Path, text: str) -> None:
    """Write through a temporary file and rename it, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
