"""The corpora the app trained on lately, newest first, for the top of the corpus picker.

A small JSON list of corpus specs (absolute paths, or built-in names such as
"nietzsche") in $XDG_CACHE_HOME/charlm-tui/recent.json (~/.cache/charlm-tui by default).
It is a convenience: a list that cannot be read is an empty one, and one that cannot be
written is left as it was, never an error in the app.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger("charlm.tui")

RECENT_LIMIT = 10


def recent_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "charlm-tui" / "recent.json"


def load_recent() -> list[str]:
    """The recent corpus specs, newest first ([] when there is no usable list)."""
    try:
        data = json.loads(recent_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(data, list):
        return []
    return [spec for spec in data if isinstance(spec, str) and spec][:RECENT_LIMIT]


def add_recent(spec: str) -> None:
    """Put `spec` first in the list, written atomically (a temporary file renamed over
    it: a reader never sees half a list, two apps at once never mix theirs)."""
    specs = [spec] + [other for other in load_recent() if other != spec]
    path = recent_path()
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(specs[:RECENT_LIMIT], indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, path)  # (no fsync: losing the newest entry in a crash is harmless)
    except OSError as error:
        log.warning("cannot write the recent corpora to %s: %s", path, error)
        with contextlib.suppress(OSError):
            temporary.unlink()
