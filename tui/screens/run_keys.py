"""The main screen's keys (tui/keys.py's table) and what each does to the run shown.

A mixin of MainScreen (tui/screens/main.py), so that the screen reads as the views of
its source and this file as its keys. Whether a key applies is asked of the source's
capabilities (tui/sources.py), never of how the app was started. Quitting is the App's.
"""

from __future__ import annotations

import time
from pathlib import Path

from textual.binding import Binding

from engine.errors import CharlmError
from tui.keys import COLUMN_KEYS, KEYS, NEEDS_SAMPLER

# action -> the source's capability it needs (absent: the key is not shown at all)
CAPABILITIES = {"toggle_pause": "can_pause", "retrain": "can_retrain", "swap_corpus": "can_swap_corpus"}


def key_bindings(keys) -> list[Binding]:
    return [Binding(k.key, k.action, k.label, key_display=k.key_display, tooltip=k.detail, show=k.footer)
            for k in keys]


class RunKeys:
    """s e t k p r c x i n ?: sampling, the seed text, temperatures, colour, pause, retrain,
    another corpus, export, the inspector, the cells view and help."""

    KEY_BINDINGS = key_bindings(k for k in KEYS if k.action != "quit")  # MainScreen's BINDINGS

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """False: the key does not apply to this source (hidden); None: not now (dimmed)."""
        source = self.source
        capability = CAPABILITIES.get(action)
        if capability is not None and not getattr(source, capability, False):
            return False
        if action == "toggle_pause":
            return True if self.phase in ("training", "paused") else None
        if action in ("retrain", "swap_corpus"):
            return None if self.phase == "stopping" else True
        if action in NEEDS_SAMPLER:
            return True if self.sampler is not None else None
        return True

    def applies(self, action: str) -> bool | None:
        """check_action for any key of the table, q (the App's) included."""
        return True if action == "quit" else self.check_action(action, ())

    def action_help(self) -> None:
        from tui.screens.help import HelpScreen

        # Only the keys that can apply here: not p, r and c in --no-train or watch.
        rows = [(k.key_display or k.key, k.label, k.detail) for k in KEYS
                if self.applies(k.action) is not False]
        rows.append(("ctrl+p", "Palette", "every action by name"))
        self.app.push_screen(HelpScreen(rows, COLUMN_KEYS))

    # -- looking inside (tui/widgets/inspector.py, tui/screens/cells.py) ---------------------------
    def action_inspect(self) -> None:
        from tui.widgets.inspector import open_inspector

        open_inspector(self)

    def action_cells(self) -> None:
        from tui.screens.cells import open_cells

        open_cells(self)

    def on_click(self, event) -> None:
        from tui.widgets.inspector import inspect_click

        inspect_click(self, event)

    # -- sampling ----------------------------------------------------------------------------------
    def action_resample(self) -> None:
        self.rounds.pin(None)
        self.request_round("resampled", now=True)

    def action_toggle_colour(self) -> None:
        pane = self.generation_pane
        pane.set_colour(not pane.colour)

    def action_edit_seed(self) -> None:
        from tui.screens.prompt import PromptScreen
        from tui.visible import restore_controls, visible

        sampler = self.sampler
        if sampler is None:
            return
        round_ = self.generation_pane.round
        current = self.rounds.pinned_seed or (round_.seed if round_ else "")
        known = set(sampler.vocab)

        def check(value: str):
            # The editor shows the corpus's control characters as pictures (a raw one would
            # command the terminal): turned back here when the model knows them.
            value = restore_controls(value, known.__contains__)
            if not value:
                return None, "the seed text is empty"
            try:
                sampler.encode(value)
            except ValueError as error:
                return None, f"{error}; use characters of the corpus"
            return value.lower() if getattr(sampler, "lowercase", False) else value, None

        self.app.push_screen(PromptScreen(
            "Seed text", "Every round starts from this text until s picks a random one. It may "
            "span lines (a speaker's name and a newline, say). Only characters the model knows "
            "are allowed.", visible(current), check, multiline=True),
            lambda value: value and self.pin_seed(value))

    def action_edit_temperatures(self) -> None:
        from engine.config import MAX_TEMPERATURES, TEMPERATURE_RULE
        from tui.keys import parse_temperatures
        from tui.screens.prompt import PromptScreen

        async def apply(value) -> None:
            if value:
                await self.set_temperatures(value)

        self.app.push_screen(PromptScreen(
            "Temperatures", f"1 to {MAX_TEMPERATURES} values separated by commas, each {TEMPERATURE_RULE}.",
            ", ".join(f"{t:g}" for t in self.temperatures), parse_temperatures,
            placeholder="0.2, 0.5, 1.0, 1.2"), apply)

    # -- the run -----------------------------------------------------------------------------------
    def action_toggle_pause(self) -> None:
        if self.source.can_pause and self.phase in ("training", "paused"):
            self.source.toggle_pause()

    def action_retrain(self) -> None:
        """Ask, then checkpoint the run and start it over from step 0 in its directory."""
        from tui.screens.confirm import ConfirmScreen
        from tui.widgets.header import display_path

        source = self.source
        if not source.can_retrain:
            return
        where = display_path(source.run_dir) if source.run_dir else "the run directory"

        async def answer(yes: bool | None) -> None:
            if yes:
                await self.stop()
                self.start(source.retrain_request())

        self.app.push_screen(ConfirmScreen(
            "Retrain from scratch?",
            f"The current model is checkpointed, then training starts over from step 0 in "
            f"{where}; the previous run is moved, whole, to a sibling folder (.prev-DATE-TIME)."), answer)

    def action_swap_corpus(self) -> None:
        """Pick another corpus; training goes on in runs/<its name>. The corpus trained
        already keeps training where it is (an explicit --run included)."""
        from tui.screens.corpus_picker import CorpusPicker
        from tui.widgets.header import display_path

        source = self.source
        if not source.can_swap_corpus:
            return
        config = source.config or self.options.config_defaults()

        async def chosen(result) -> None:
            if result:
                corpus = result[1]
                if source.trains(corpus):
                    where = display_path(source.run_dir) if source.run_dir else "its run directory"
                    self.app.notify(f"{corpus.name} is the corpus being trained: training goes on in {where}",
                                    title="Corpus")
                    return
                await self.stop()
                self.start(source.corpus_request(corpus))

        self.app.push_screen(CorpusPicker(source.corpus_name, lowercase=config.lowercase,
                                          encoding=source.encoding, config=config), chosen)

    def action_export(self) -> None:
        """Write the current samples, with where they came from, to a new file: in the run
        directory, or for a watcher (which never writes there) in the current directory."""
        from engine.files.safeio import write_new_file
        from tui.widgets.header import display_path

        if self.generation_pane.round is None:
            self.app.notify("nothing to export yet", severity="warning")
            return
        run_dir = Path(self.options.run_dir or self.header.info.run_dir)
        folder, source = run_dir, ""
        if not self.source.writes_run_dir:
            folder, source = Path.cwd(), f" (watching {run_dir})"
            if folder.resolve() == run_dir.resolve():
                self.app.notify("watching never writes to the run directory: run it from another "
                                "directory to export", severity="warning")
                return
        info, shown = self.header.info, self.progress
        text = (f"# charlm-tui samples{source}, {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                f"# corpus {info.corpus} · model {info.model or 'not built yet'}"
                f"{f' · preset {info.preset}' if info.preset else ''} · "
                f"epoch {shown.epoch} · step {shown.step:,}\n" + self.generation_pane.export_text())
        try:
            path = write_new_file(folder, f"samples-{time.strftime('%Y%m%d-%H%M%S')}", text)
        except CharlmError as error:
            self.app.notify(str(error), title="Export failed", severity="error", timeout=10)
            return
        self.app.notify(display_path(path), title="Samples exported")
