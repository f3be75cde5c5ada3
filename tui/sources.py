"""Where the main screen's run comes from: one interface, one implementation per origin.

A `RunSource` runs on a thread of its own and hands the screen engine events
(engine/events.py) in one shape, a list at a time, on that thread. The screen folds them
with engine.progress.reduce whatever their origin, and asks the source only what this
module's protocol offers: what it can do (pause, retrain, swap the corpus), the sampler
of its newest weights, the text of random seed texts and the words of its status line.

    TrainingSource   a RunSession training here (charlm-tui, charlm-tui --run)
    FollowerSource   a RunFollower reading a run directory: once (--no-train), or as
                     another process trains it (watch)
    make_source      the one the app's options ask for
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from engine import events, progress
from engine.errors import CharlmError

OnEvents = Callable[[Sequence], None]  # called on the source's thread
STALE_AFTER = 30.0  # watch: seconds without new metrics before saying so


class RunSource(Protocol):
    """A run the screen can show. Every attribute may be read from the UI thread."""

    can_pause: bool          # p pauses and resumes it
    can_retrain: bool        # r starts it over, c trains another corpus
    can_swap_corpus: bool
    copies_weights: bool     # sampler() copies weights (slow: call it on a thread)
    goes_stale: bool         # metrics written by another process may stop coming
    writes_run_dir: bool     # x may write its samples into the run directory
    placeholder: str         # the generation pane's text until the first round
    preparing: str           # the status line until the run says more
    failure_title: str       # a failure's notification title
    leaving: str             # the status line while q stops it
    started: bool            # start() was called (before it, there is nothing to stop or wait for)
    done: threading.Event    # set however the run ends
    session: object          # the engine.run.session.RunSession training here, else None
    saved_config: object     # a saved run's own settings (its temperatures apply), else None
    excerpts: list[str]      # seed texts saved with the run, for when its text is elsewhere
    checkpoint_error: object  # why the last checkpoint failed (q asks before leaving), else None

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...
    def sampler(self): ...
    def seed_corpus(self): ...
    def round_reason(self, event, shown: progress.Progress) -> str | None: ...
    def header_fields(self, event) -> dict: ...
    def phase(self, shown: progress.Progress, sampling: bool) -> str: ...
    def status(self, shown: progress.Progress, sampling: bool, preparing: str, quiet: float) -> str: ...

    # Asked only of a source whose capability says so (can_pause, can_retrain, can_swap_corpus):
    # toggle_pause(); save_checkpoint(); retrain_request(); corpus_request(corpus); trains(corpus);
    # and config, corpus_name, run_dir, encoding (what the corpus picker starts from).


# progress.Progress.state -> how the training pane marks it
STATE_KINDS = {"starting": "loading", "running": "training", "paused": "paused", "stopping": "stopping",
               "stopped": "finished", "finished": "finished", "failed": "error"}


def make_source(options, request, on_events: OnEvents) -> RunSource:
    """Train `request` (mode "train"), else read the options' run directory."""
    if options.mode == "train":
        return TrainingSource(request, on_events)
    return FollowerSource(options.run_dir, on_events, follow=options.mode == "watch",
                          checkpoint=options.checkpoint, encoding=options.encoding)


class TrainingSource:
    """A RunSession training here: it can pause, start over and change corpus."""

    can_pause = can_retrain = can_swap_corpus = copies_weights = writes_run_dir = True
    goes_stale = False
    placeholder = "waiting for the model (TensorFlow is loading)…"
    failure_title = "Training stopped"
    leaving = "saving a checkpoint before quitting…"

    def __init__(self, request, on_events: OnEvents) -> None:
        from engine.run.session import RunSession

        self.on_events = on_events
        self.session = RunSession(request, self._on_event)
        self.started, self.done = False, self.session.done
        loading = isinstance(request.corpus, str)  # (a corpus the picker chose arrives loaded)
        self.preparing = "loading the corpus…" if loading else "loading TensorFlow…"

    def _on_event(self, event) -> None:
        if isinstance(event, events.CorpusReady):
            self._remember_corpus()
        self.on_events(self._with_history(event))

    def _with_history(self, event) -> tuple:
        """A resumed run's plot and epoch list start with what its metrics.jsonl holds."""
        if isinstance(event, events.TrainingStarted) and event.resumed_from_step and event.run_dir:
            from engine.run.follow import history

            with contextlib.suppress(CharlmError, OSError):
                return (*history(event.run_dir), event)
        return (event,)

    def _remember_corpus(self) -> None:
        """Its figures for the picker, and the recent list (a corpus the picker chose
        arrives loaded: the picker has remembered it)."""
        request, corpus = self.session.request, self.session.corpus
        if isinstance(request.corpus, str) and corpus is not None:
            with contextlib.suppress(Exception):
                from tui.screens.corpus_picker import remember_corpus

                remember_corpus(request.corpus, corpus, request.encoding)

    # -- the run ---------------------------------------------------------------------------------
    def start(self) -> None:
        self.started = True
        self.session.start()

    def stop(self) -> None:
        self.session.stop()

    def wait(self, timeout: float | None = None) -> bool:
        return not self.started or self.session.wait(timeout)

    def sampler(self):
        return self.session.sampler()

    def seed_corpus(self):
        return self.session.corpus

    def toggle_pause(self) -> None:
        self.session.resume() if self.session.paused else self.session.pause()

    @property
    def checkpoint_error(self):
        return self.session.checkpoint_error

    def save_checkpoint(self) -> None:
        self.session.save_checkpoint()

    saved_config = None  # (the settings trained are the request's)
    excerpts: tuple[str, ...] = ()

    # -- starting over -------------------------------------------------------------------------------
    @property
    def config(self):
        """The settings trained (settled once the corpus is ready), else None."""
        return self.session.config

    @property
    def corpus_name(self) -> str | None:
        return self.session.corpus.name if self.session.corpus is not None else None

    @property
    def run_dir(self):
        return self.session.run_dir

    @property
    def encoding(self) -> str | None:
        return self.session.request.encoding

    def retrain_request(self):
        """This run again, from step 0 in its directory."""
        session = self.session
        corpus = session.corpus if session.corpus is not None else session.request.corpus
        return dataclasses.replace(session.request, corpus=corpus, run_dir=session.run_dir, fresh=True)

    def corpus_request(self, corpus):
        """The same settings on another corpus, in runs/<its name>."""
        from engine.run.session import default_run_dir

        return dataclasses.replace(self.session.request, corpus=corpus,
                                   run_dir=default_run_dir(corpus.name), fresh=False)

    def trains(self, corpus) -> bool:
        """Whether `corpus` is the text being trained right now."""
        return _same_text(corpus, self.session.corpus) and not self.done.is_set()

    # -- what the screen shows --------------------------------------------------------------------
    def round_reason(self, event, shown: progress.Progress) -> str | None:
        """A round from the model as it is when training starts and at each checkpoint."""
        if isinstance(event, events.TrainingStarted):
            return ("before training" if not event.resumed_from_step
                    else f"resumed at step {event.resumed_from_step:,}")
        if isinstance(event, events.CheckpointSaved):
            return (f"after epoch {event.epoch}" if shown.batch in (0, shown.batches_per_epoch)
                    else f"checkpoint at step {event.step:,}")
        return None

    def header_fields(self, event) -> dict:
        if isinstance(event, events.CorpusReady) and self.session.config is not None:
            config = self.session.config  # what is trained, as watch and --no-train show it
            return dict(layers=config.layers, units=config.units, preset=config.preset,
                        objective=config.objective)
        return {}

    def phase(self, shown: progress.Progress, sampling: bool) -> str:
        return STATE_KINDS[shown.state]

    def status(self, shown: progress.Progress, sampling: bool, preparing: str, quiet: float) -> str:
        if shown.state == "starting":
            return preparing
        if shown.state == "running":
            # After the last batch of an epoch the held-out text is scored (seconds on a
            # big corpus): say so rather than look stuck.
            scoring = shown.batches_per_epoch and shown.batch >= shown.batches_per_epoch
            return "training · scoring held-out text…" if scoring else "training"
        if shown.state == "paused":
            return "paused (p resumes)"
        if shown.state == "stopping":
            return "saving a checkpoint…"
        if shown.state == "stopped":
            return "stopped (checkpoint saved)"
        return f"finished: {progress.describe_end(shown.finish_reason)}"


class FollowerSource:
    """A run directory read by a RunFollower: a saved run sampled (--no-train), or a run
    another process trains, followed (watch). It never writes to the run directory."""

    can_pause = can_retrain = can_swap_corpus = copies_weights = False
    placeholder = "waiting for a checkpoint of the run (loading it)…"
    preparing = "opening the run…"
    failure_title = "Cannot open the run"
    session = None

    def __init__(self, run_dir, on_events: OnEvents, *, follow: bool, checkpoint: str = "latest",
                 encoding: str | None = None) -> None:
        from engine.run.follow import RunFollower

        self.follower = RunFollower(run_dir, on_events, follow=follow, checkpoint=checkpoint)
        self.follow = self.goes_stale = follow
        self.writes_run_dir = not follow
        self.leaving = ("leaving (the trainer goes on)…" if follow
                        else "saving a checkpoint before quitting…")
        self.encoding = encoding
        self.started, self.done = False, self.follower.done

    def start(self) -> None:
        self.started = True
        self.follower.start()

    def stop(self) -> None:
        self.follower.stop()

    def wait(self, timeout: float | None = None) -> bool:
        return not self.started or self.follower.wait(timeout)

    def sampler(self):
        return self.follower.sampler()

    def seed_corpus(self):
        """The training text when it is on this machine (reads it: call on a thread)."""
        from engine.data.trainingtext import seed_corpus

        saved = self.follower.saved
        return seed_corpus(saved, self.encoding) if saved is not None else None

    @property
    def checkpoints_loaded(self) -> int:
        """How many checkpoints the sampler has come from so far."""
        return self.follower.checkpoints_loaded

    @property
    def checkpoint_error(self):
        return None  # (it saves none)

    @property
    def saved(self):
        """The run's settings and excerpts (engine.run.follow.SavedRun), once it is open."""
        return self.follower.saved

    # -- what the screen shows --------------------------------------------------------------------
    def round_reason(self, event, shown: progress.Progress) -> str | None:
        """A round from each checkpoint loaded."""
        if not isinstance(event, events.CheckpointSaved):
            return None
        if not self.follow:
            saved = self.follower.saved
            best = saved is not None and saved.choice == "best"
            return "from the saved model" + (" (its best checkpoint)" if best else "")
        return f"checkpoint at step {event.step:,}" if event.step else "new checkpoint"

    def header_fields(self, event) -> dict:
        saved = self.follower.saved
        if isinstance(event, events.CorpusReady) and saved is not None:
            config = saved.config
            return dict(layers=config.layers, units=config.units, preset=config.preset,
                        objective=config.objective, device="CPU")
        if isinstance(event, events.CheckpointSaved) and saved is not None:
            return dict(parameters=saved.parameters)
        return {}

    @property
    def saved_config(self):
        """The run's own settings (its temperatures and sample length apply), once open."""
        return self.follower.saved.config if self.follower.saved is not None else None

    @property
    def excerpts(self) -> list[str]:
        return self.follower.saved.excerpts if self.follower.saved is not None else []

    def phase(self, shown: progress.Progress, sampling: bool) -> str:
        if not self.follow:
            return "sampling" if sampling else "loading"
        return STATE_KINDS[shown.state]

    def status(self, shown: progress.Progress, sampling: bool, preparing: str, quiet: float) -> str:
        """Short enough for the stats pane at 120 columns (44 cells): the header says what
        is watched, the bars and numbers where the run is."""
        if not self.follow:
            return "sampling only (--no-train)" if sampling else "opening the run (loading the model)…"
        if shown.state == "starting":
            return preparing if self.follower.saved is None else "waiting for the trainer's metrics…"
        if shown.state in ("stopped", "finished"):
            return f"the run ended: {progress.describe_end(shown.finish_reason)}"
        if quiet > STALE_AFTER:
            return f"no new metrics for {quiet:.0f} s"
        return "training in another process"


def _same_text(chosen, current) -> bool:
    """Whether the picker's choice is the corpus being trained: the same file or folder
    (or the same built-in), read with the same case setting."""
    if chosen is None or current is None or chosen.lowercase != current.lowercase:
        return False
    try:
        return os.path.samefile(chosen.source, current.source)
    except OSError:  # a built-in's description, or a file gone
        return chosen.source == current.source and chosen.name == current.name

