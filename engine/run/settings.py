"""The settings of a run, worked out once from a request and the run directory.

A resumed run keeps its saved settings unless the request overrides them (or names
another preset, or starts fresh). The session and the trainer share the one RunSettings
made here, so a resumed run's config.json is read, and its directory vetted, once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from engine.config import SESSION_FIELDS, TrainConfig, preset
from engine.files.rundir import RunDir


@dataclass(frozen=True)
class RunSettings:
    run_dir: Path
    config: TrainConfig          # what to train with
    saved: TrainConfig | None    # the run's config.json (None: a new run, or one started over)
    resumed: bool                # whether `config` comes from `saved` (same preset, not --fresh)
    overrides: dict              # the settings the request gave explicitly

    def kept_from_run(self) -> dict:
        """The settings a resumed run keeps from its config.json that differ from what its
        preset alone would give and that the request does not set: what to tell the user."""
        if not self.resumed:
            return {}
        defaults = preset(self.saved.preset).to_json()
        ignored = {"strategy", "extra", *SESSION_FIELDS, *self.overrides}
        return {"preset": self.saved.preset, **{name: value for name, value in self.saved.to_json().items()
                                                if name not in ignored and value != defaults[name]}}


def resolve(run_dir, *, preset_name: str | None, overrides: dict, fresh: bool,
            corpus_path: Path | None) -> RunSettings:
    """The settings to train with in `run_dir`, after refusing (RunDirError) a directory
    that training could hurt, before anything is written there."""
    run = RunDir(run_dir)
    run.check_can_train(corpus_path)
    saved = run.load_config() if run.config_path.exists() and not fresh else None
    if saved is None or (preset_name is not None and preset_name != saved.preset):
        config = preset(preset_name or "fast", **overrides)
        return RunSettings(run.path, config, saved, False, dict(overrides))
    # How to spread the work depends on this machine, and stopping limits on this
    # session (SESSION_FIELDS): neither is the run's.
    not_the_runs = {"strategy": "default", **{name: None for name in SESSION_FIELDS}}
    config = dataclasses.replace(saved, **{**not_the_runs, **overrides})
    config.validate()
    return RunSettings(run.path, config, saved, True, dict(overrides))
