"""The errors the engine raises on purpose.

Each carries one sentence a user can act on; front ends print `str(error)` and exit
non-zero (headless) or show a notification (app). Anything else is a bug.
"""


class CharlmError(Exception):
    """Base class: a refusal with a clear, one-line reason."""


class CorpusError(CharlmError):
    """The corpus cannot be used (missing, empty, binary, badly encoded, too short...)."""


class RunDirError(CharlmError):
    """The run directory cannot be used (locked, corrupt, incompatible, unwritable...)."""


class TrainingError(CharlmError):
    """Training cannot go on (for example the loss became NaN)."""
