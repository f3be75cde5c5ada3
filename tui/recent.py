"""The corpora the app trained on lately, newest first, for the top of the corpus picker.

A small JSON list of corpus specs (absolute paths, or built-in names such as
"nietzsche") in $XDG_CACHE_HOME/charlm-tui/recent.json (~/.cache/charlm-tui by default).
It is a convenience: a list that cannot be read is an empty one, and one that cannot be
written is left as it was, never an error in the app.

It lives outside the run directory but is read and written as the run directory's files
are (engine/files/safeio.py): only a regular file is read (a FIFO there would freeze the app, a
link to /dev/zero fill its memory), at most MAX_RECENT_BYTES of it, never through a link;
and it is replaced atomically through a new O_EXCL temporary, so a link planted at the
temporary's name is never written through.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from engine.errors import RunDirError
from engine.files.safeio import FileTooLarge, NotRegularFile, atomic_write_bytes, read_regular_file

log = logging.getLogger("charlm.tui")

RECENT_LIMIT = 10
MAX_RECENT_BYTES = 256 << 10  # ten paths of at most 4096 bytes each are ~41 KB of JSON


def recent_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "charlm-tui" / "recent.json"


def load_recent() -> list[str]:
    """The recent corpus specs, newest first ([] when there is no usable list)."""
    path = recent_path()
    try:
        data = json.loads(read_regular_file(path, MAX_RECENT_BYTES).decode("utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, NotRegularFile, FileTooLarge, ValueError, RecursionError) as error:
        log.warning("ignoring the recent corpora in %s: %s", path, error)
        return []
    if not isinstance(data, list):
        return []
    return [spec for spec in data if isinstance(spec, str) and spec][:RECENT_LIMIT]


def add_recent(spec: str) -> None:
    """Put `spec` first in the list, written atomically (a temporary file renamed over
    it: a reader never sees half a list, two apps at once never mix theirs)."""
    specs = [spec] + [other for other in load_recent() if other != spec]
    path = recent_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, (json.dumps(specs[:RECENT_LIMIT], indent=1) + "\n").encode("utf-8"))
    except (OSError, RunDirError) as error:
        log.warning("cannot write the recent corpora to %s: %s", path, error)
