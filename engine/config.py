"""Every training setting in one place, with the two presets.

`book` is the recipe of Deep Learning with Python, section 8.1, exactly: one target per
60-char window. `fast` keeps the architecture but trains on every position of each
window (as char-rnn, torch-rnn and nanoGPT do), which gives ~60x more targets per
forward pass, with gradient clipping to keep it stable.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field

PRESETS = ("book", "fast")
OBJECTIVES = ("last", "all")  # predict the char after the window / every next char
STRATEGIES = ("default", "mirrored", "multiworker")  # see engine.scale.distribute
SCHEDULES = ("constant", "cosine")  # see engine.run.schedule

MAX_SEED = 2**32 - 1  # what numpy's and Keras's global seeding accept
# A temperature is 0 (greedy: always the likeliest character) or at least 0.01: below
# that 1/T overflows or leaves nothing but the argmax anyway.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 10.0
TEMPERATURE_RULE = f"0 (greedy) or a number from {MIN_TEMPERATURE} to {MAX_TEMPERATURE:g}"
MAX_TEMPERATURES = 6  # one column each in the app
# Limits of one session (one `train`, one app run), never a run's settings: a resumed
# run starts without them unless given again.
SESSION_FIELDS = ("time_budget", "steps")
MAX_EXTRA_DEPTH = 32  # `extra` is reserved for flat settings; deeper nesting only breaks recursion


class SettingError(ValueError):
    """A setting that cannot work; `field` is the TrainConfig field it is about."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def is_finite_number(value) -> bool:
    """Whether `value` is a real, finite number: the one rule every reader of numbers from a
    file, an event or a user applies (a bool is not a number here; numpy's scalars are)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def valid_temperature(value) -> bool:
    return is_finite_number(value) and (value == 0 or MIN_TEMPERATURE <= value <= MAX_TEMPERATURE)


def _nesting_depth(value, limit: int = MAX_EXTRA_DEPTH) -> int:
    """How deep lists and dicts nest in `value` (counted without recursion, and only up to
    just past `limit`, so a hostile 100,000-deep object costs nothing)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


@dataclass
class TrainConfig:
    preset: str = "fast"
    objective: str = "all"        # "last": the book's next-char target; "all": every position
    # fast defaults, from bench/tune_fast.py on this 2-core CPU: short windows and 256-window
    # batches give the most updates per second; scored with 50+ chars of context they beat
    # maxlen 32/100 after 5-10 minutes (1.39 vs 1.41 and 1.5+ nats held out).
    maxlen: int = 16              # characters per training window
    step: int = 8                 # a new window every `step` characters
    units: int = 128              # LSTM units per layer
    layers: int = 1               # stacked LSTM layers
    dropout: float = 0.0          # dropout between LSTM layers (and before the classifier)
    batch_size: int = 256
    optimizer: str = "adam"       # "rmsprop" (book) or "adam"
    lr: float = 0.02
    clipnorm: float | None = 1.0  # gradient clipping by global norm; None: off (book)
    # The learning rate over the run (engine/run/schedule.py): "constant" (book), or "cosine":
    # a linear warm-up over `warmup_steps`, held for the first half of the run, then a cosine
    # decay to lr * lr_floor at the end of the run as planned (its last epoch, --steps or
    # --time-budget, whichever comes first), as nanoGPT decays to its max_iters. Measured by
    # bench/heldout_loss.py on Nietzsche (README): 1.375 nats after 600 s and 1.393 after
    # 120 s, against 1.392 and 1.422 at a constant 0.008; a decay over the whole run, or a
    # lower peak, gives up the fast early learning of a short run (1.51 after 120 s).
    schedule: str = "cosine"
    keep_every: int = 0           # also keep every Nth epoch's checkpoint (model.epoch-NNNN.keras); 0: off
    keep_max: int = 5             # ... at most this many of them (the oldest go)
    warmup_steps: int = 100
    lr_floor: float = 0.05
    decay_start: float = 0.5      # the rate is held for this fraction of the run, then decays
    # 25 passes over the text: on Nietzsche (540k training characters) the held-out loss is
    # lowest after 20-25 epochs and rises after (bench/heldout_loss.py, README "Structure":
    # 1.3653 at 20, 1.3647 at 25, 1.3672 at 30, 1.3735 at 57 of 60); the cosine decay ends
    # with them. A larger text takes longer per epoch and overfits later; --epochs sets more.
    epochs: int = 25
    # An early stop (engine/run/patience.py): late in a run (the rate down to a quarter of its
    # peak), a run whose held-out loss has not improved on its best for this many epoch ends
    # stops there, its weights set back to that best checkpoint's, so training more never
    # ends worse; 0: off (book).
    patience: int = 3
    time_budget: float | None = None  # stop after this many seconds of training (this session)
    steps: int | None = None          # stop after this many optimizer steps (this session)
    val_fraction: float = 0.1     # the last fraction of the corpus is held out
    seed: int = 1337              # shuffling, seed texts and sampling
    lowercase: bool = False       # keep case (as char-rnn, torch-rnn, nanoGPT); book: lower-cased
    temperatures: tuple[float, ...] = (0.2, 0.5, 1.0, 1.2)
    sample_length: int = 400      # characters generated per temperature after each epoch
    log_every: int = 50           # steps between metrics.jsonl rows / progress events
    checkpoint_every: float = 300.0   # seconds between mid-epoch checkpoints
    val_max_windows: int = 20_000     # cap on held-out windows evaluated per epoch
    strategy: str = "default"     # tf.distribute: default, mirrored (local GPUs), multiworker (TF_CONFIG)
    mixed_precision: bool = False  # float16/bfloat16 compute on a GPU, float32 softmax
    extra: dict = field(default_factory=dict)  # reserved for future settings

    def validate(self) -> None:
        """Raise SettingError (a ValueError naming the field) with a helpful sentence for a
        setting that cannot work. The same rules hold for a command-line option, a preset
        and a config.json read back, so nothing accepted on the way in is refused later."""
        for name, ok, message in self._rules():
            if not ok:
                raise SettingError(name, message)

    def _rules(self):
        """(field, holds, sentence) for every field: every number finite and in range."""
        finite = is_finite_number
        return [
            ("preset", self.preset in PRESETS, f"preset must be one of {', '.join(PRESETS)}"),
            ("objective", self.objective in OBJECTIVES, f"objective must be one of {', '.join(OBJECTIVES)}"),
            ("optimizer", self.optimizer in ("rmsprop", "adam"), "optimizer must be rmsprop or adam"),
            ("keep_every", isinstance(self.keep_every, int) and 0 <= self.keep_every <= 100_000,
             "--keep-every must be a whole number of epochs, 0 (off) or more"),
            ("keep_max", isinstance(self.keep_max, int) and 1 <= self.keep_max <= 1000,
             "--keep-max must be between 1 and 1000"),
            ("schedule", self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}"),
            ("warmup_steps", 0 <= self.warmup_steps <= 1_000_000,
             "warmup_steps must be between 0 and 1000000"),
            ("lr_floor", finite(self.lr_floor) and 0.0 <= self.lr_floor <= 1.0, "lr_floor must be in [0, 1]"),
            ("decay_start", finite(self.decay_start) and 0.0 <= self.decay_start < 1.0,
             "decay_start must be in [0, 1)"),
            ("strategy", self.strategy in STRATEGIES, f"--strategy must be one of {', '.join(STRATEGIES)}"),
            ("maxlen", 2 <= self.maxlen <= 10_000, "--maxlen must be between 2 and 10000"),
            ("step", 1 <= self.step <= 10_000, "--step must be between 1 and 10000"),
            ("units", 1 <= self.units <= 8192, "--units must be between 1 and 8192"),
            ("layers", 1 <= self.layers <= 16, "--layers must be between 1 and 16"),
            ("dropout", finite(self.dropout) and 0.0 <= self.dropout < 1.0, "--dropout must be in [0, 1)"),
            ("batch_size", 1 <= self.batch_size <= 65_536, "--batch-size must be between 1 and 65536"),
            ("lr", finite(self.lr) and 0.0 < self.lr < 10.0, "--lr must be a positive number below 10"),
            ("clipnorm", self.clipnorm is None or (finite(self.clipnorm) and self.clipnorm > 0),
             "clipnorm must be a positive finite number (or null: no clipping)"),
            ("epochs", 1 <= self.epochs <= 100_000, "--epochs must be between 1 and 100000"),
            ("patience", isinstance(self.patience, int) and 0 <= self.patience <= 100_000,
             "--patience must be a whole number of epochs, 0 (off) or more"),
            ("time_budget", self.time_budget is None or (finite(self.time_budget) and self.time_budget > 0),
             "--time-budget must be a positive finite number of seconds"),
            ("steps", self.steps is None or self.steps > 0, "--steps must be positive"),
            ("val_fraction", finite(self.val_fraction) and 0.0 < self.val_fraction < 0.5,
             "--val-fraction must be in (0, 0.5)"),
            ("seed", 0 <= self.seed <= MAX_SEED, f"--seed must be a whole number from 0 to {MAX_SEED}"),
            ("temperatures", 1 <= len(self.temperatures) <= MAX_TEMPERATURES,
             f"give between 1 and {MAX_TEMPERATURES} temperatures"),
            ("temperatures", all(valid_temperature(t) for t in self.temperatures),
             f"each temperature must be {TEMPERATURE_RULE}"),
            ("sample_length", 0 <= self.sample_length <= 100_000, "sample length must be in [0, 100000]"),
            ("log_every", self.log_every >= 1, "log_every must be at least 1"),
            ("checkpoint_every", finite(self.checkpoint_every) and self.checkpoint_every >= 0,
             "--checkpoint-every must be a finite number of seconds, 0 or more"),
            ("val_max_windows", self.val_max_windows >= 1, "val_max_windows must be at least 1"),
            ("extra", isinstance(self.extra, dict) and _nesting_depth(self.extra) <= MAX_EXTRA_DEPTH,
             f"extra must be an object nested at most {MAX_EXTRA_DEPTH} levels deep"),
        ]

    @property
    def targets_per_window(self) -> int:
        return self.maxlen if self.objective == "all" else 1

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["temperatures"] = list(self.temperatures)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "TrainConfig":
        """Rebuild a config from run-directory JSON, ignoring unknown keys (newer versions)."""
        if not isinstance(data, dict):
            raise ValueError("config is not a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        _check_json_types(kwargs)
        kwargs.setdefault("schedule", "constant")  # runs from before schedules trained at a constant rate
        kwargs.setdefault("decay_start", 0.0)      # ... and runs from before decay_start decayed throughout
        kwargs.setdefault("patience", 0)           # ... and runs from before the early stop had none
        if "temperatures" in kwargs:
            kwargs["temperatures"] = tuple(float(t) for t in kwargs["temperatures"])
        config = cls(**kwargs)
        config.validate()
        return config


def _check_json_types(data: dict) -> None:
    """Raise ValueError unless every known field of a config's JSON has its field's JSON type
    (from_json then converts and range-checks): "8" or true never reaches TensorFlow."""
    kinds = {
        "str": lambda v: isinstance(v, str),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": is_finite_number,
        "bool": lambda v: isinstance(v, bool),
        "dict": lambda v: isinstance(v, dict),
        "tuple[float, ...]": lambda v: isinstance(v, (list, tuple)) and all(is_finite_number(t) for t in v),
    }
    for setting in dataclasses.fields(TrainConfig):
        if setting.name not in data:
            continue
        annotation = setting.type if isinstance(setting.type, str) \
            else getattr(setting.type, "__name__", str(setting.type))
        optional = annotation.endswith(" | None")
        check = kinds.get(annotation.removesuffix(" | None"))
        value = data[setting.name]
        if check is None or (optional and value is None):
            continue  # a field this check does not know about is left to validate()
        if not check(value):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            expected = "list of numbers" if annotation.startswith("tuple") else annotation
            raise ValueError(f"{setting.name} is {shown}, not {expected}")


def preset(name: str, **overrides) -> TrainConfig:
    """The named preset with `overrides` (None values are ignored) applied on top."""
    if name == "book":
        # Deep Learning with Python 8.1: 60-char windows every 3 chars, LSTM(128) +
        # Dense softmax, RMSprop(lr=0.01), batch 128, the next char as the only target,
        # on the lower-cased text.
        base = TrainConfig(preset="book", objective="last", maxlen=60, step=3,
                           optimizer="rmsprop", lr=0.01, clipnorm=None, batch_size=128,
                           schedule="constant", patience=0, epochs=60, lowercase=True)
    elif name == "fast":
        base = TrainConfig()
    else:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    config = dataclasses.replace(base, **changes)
    config.validate()
    return config
