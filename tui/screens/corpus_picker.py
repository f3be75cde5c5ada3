"""Choose a corpus: the named corpora, corpora/*.txt, or any file or folder on disk.

Sizes and vocabularies are computed on a worker thread (a corpus is read in full to
know its vocabulary) and cached for the session, so reopening the picker is instant.
Choosing loads the corpus off the event loop too; a corpus the engine refuses is
reported and the picker stays open, so the current run is never stopped for nothing.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DirectoryTree, Label, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from engine.errors import CharlmError


@dataclass(frozen=True)
class CorpusInfo:
    chars: int | None = None
    vocab: int | None = None
    error: str | None = None
    note: str | None = None  # e.g. "downloaded on first use"

    def describe(self) -> str:
        if self.error:
            return f"unusable: {self.error}"
        if self.chars is None:
            return self.note or "…"
        return f"{self.chars:,} chars · vocab {self.vocab}"


# (spec, mtime, size, lowercase) -> CorpusInfo, shared by every picker of the session.
_INFO_CACHE: dict[tuple, CorpusInfo] = {}
_CACHE_LOCK = threading.Lock()


def _cache_key(spec: str, lowercase: bool) -> tuple:
    try:
        stat = os.stat(spec)
        return (spec, stat.st_mtime_ns, stat.st_size, lowercase)
    except OSError:
        return (spec, None, None, lowercase)


def corpus_info(spec: str, lowercase: bool, encoding: str | None = None) -> CorpusInfo:
    """Size and vocabulary of a corpus (reads it; call off the event loop)."""
    from engine.corpus import load_corpus

    key = _cache_key(spec, lowercase)
    with _CACHE_LOCK:
        if key in _INFO_CACHE:
            return _INFO_CACHE[key]
    try:
        corpus = load_corpus(spec, lowercase=lowercase, encoding=encoding)
        info = CorpusInfo(len(corpus), len(corpus.vocab))
    except CharlmError as error:
        info = CorpusInfo(error=str(error))
    with _CACHE_LOCK:
        _INFO_CACHE[key] = info
    return info


def remember_corpus(spec: str, corpus) -> None:
    """Record a corpus loaded elsewhere (the app's current one) in the info cache."""
    with _CACHE_LOCK:
        _INFO_CACHE[_cache_key(spec, corpus.lowercase)] = CorpusInfo(len(corpus), len(corpus.vocab))


# Built-in corpora that are fetched or built on first use: listing must not do that.
FIRST_USE_NOTES = {
    "nietzsche": "downloaded on first use (pydocs is used when offline)",
    "pydocs": "Python's docstrings, collected on first use",
}


def builtin_is_local(name: str) -> bool:
    """True when a built-in corpus is already on disk (measuring it costs no download)."""
    from engine.corpus import is_on_disk

    try:
        return is_on_disk(name)
    except OSError:
        return False


class PlainDirectoryTree(DirectoryTree):
    """A DirectoryTree with plain-text icons (emoji are double width in some terminals)."""

    ICON_NODE_EXPANDED = "▾ "
    ICON_NODE = "▸ "
    ICON_FILE = "  "

    def filter_paths(self, paths):
        return [path for path in paths if not path.name.startswith(".")]


class CorpusPicker(ModalScreen[object]):
    """Dismisses with (spec, loaded Corpus), or None when cancelled."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("u", "use_highlighted", "Use file/folder"),
    ]

    def __init__(self, current: str | None, lowercase: bool = True, encoding: str | None = None,
                 corpora_dir: Path | None = None, browse_root: Path | None = None,
                 config=None) -> None:
        super().__init__()
        self.current = current
        self.config = config  # TrainConfig: a corpus too short for it is refused here
        self.lowercase = lowercase
        self.encoding = encoding
        self.corpora_dir = corpora_dir
        self.browse_root = browse_root or Path(".")
        self.entries: dict[str, str] = {}  # name -> description (a path for corpora/ files)
        self.infos: dict[str, CorpusInfo] = {}
        self.busy = False

    def compose(self) -> ComposeResult:
        from engine.corpus import named_corpora

        try:
            self.entries = named_corpora(self.corpora_dir)
        except (OSError, CharlmError):
            self.entries = {}
        with Vertical(classes="dialog", id="picker"):
            yield Label("Choose a corpus", classes="dialog-title")
            yield Static("Named corpora and corpora/*.txt", classes="dialog-help")
            yield OptionList(*[Option(self._prompt(name), id=name) for name in self.entries],
                             id="named")
            yield Static("…or a file, or a folder of .txt files (u uses a folder)", classes="dialog-help")
            yield PlainDirectoryTree(self.browse_root, id="browser")
            yield Static("", id="picker-detail", markup=False)
            yield Static("Enter: train on it · Tab: list ⇄ files · u: use folder · Esc: cancel",
                         classes="dialog-hint")

    def on_mount(self) -> None:
        tree = self.query_one("#browser", DirectoryTree)
        if not self.browse_root.is_absolute():
            tree.root.set_label(f"{self.browse_root}{os.sep}")  # "." alone reads as nothing
        names = list(self.entries)
        option_list = self.query_one("#named", OptionList)
        if self.current in names:
            option_list.highlighted = names.index(self.current)
        option_list.focus()
        self.measure_named()

    # -- sizes and vocabularies, off the event loop --------------------------------------
    @work(thread=True, exclusive=True, group="picker-info")
    def measure_named(self) -> None:
        worker = get_current_worker()
        for name in list(self.entries):
            if worker.is_cancelled:
                return
            if name in FIRST_USE_NOTES and not Path(self.entries[name]).is_file() \
                    and not builtin_is_local(name):
                info = CorpusInfo(note=FIRST_USE_NOTES[name])
            else:
                info = corpus_info(name, self.lowercase)
            self.app.call_from_thread(self._set_info, name, info)

    def _set_info(self, name: str, info: CorpusInfo) -> None:
        self.infos[name] = info
        if self.is_attached:
            self.query_one("#named", OptionList).replace_option_prompt(name, self._prompt(name))

    def _prompt(self, name: str) -> Text:
        info = self.infos.get(name)
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"{name:<14}", style="bold")
        text.append(" ")
        if info is None:
            text.append("measuring…", style="dim italic")
        elif info.error:
            text.append(info.describe(), style="red")
        else:
            text.append(info.describe(), style="" if info.chars is not None else "dim italic")
        if name == self.current:
            text.append("  (current)", style="italic")
        return text

    @on(DirectoryTree.NodeHighlighted, "#browser")
    def _file_highlighted(self, event: DirectoryTree.NodeHighlighted) -> None:
        entry = event.node.data
        if entry is not None and entry.path.is_file():
            self._measure_file(str(entry.path))

    @work(thread=True, exclusive=True, group="picker-file")
    def _measure_file(self, path: str) -> None:
        self.app.call_from_thread(self._detail, f"{path}: measuring…")
        info = corpus_info(path, self.lowercase, self.encoding)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._detail, f"{path}: {info.describe()}")

    def _detail(self, text: str) -> None:
        if self.is_attached:
            self.query_one("#picker-detail", Static).update(text)

    # -- choosing --------------------------------------------------------------------------
    @on(OptionList.OptionSelected, "#named")
    def _named_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option_id:
            self.choose(event.option_id)

    @on(DirectoryTree.FileSelected, "#browser")
    def _file_selected(self, event: DirectoryTree.FileSelected) -> None:
        event.stop()
        self.choose(str(event.path))

    def action_use_highlighted(self) -> None:
        focused = self.focused
        if isinstance(focused, DirectoryTree):
            node = focused.cursor_node
            if node is not None and node.data is not None:
                self.choose(str(node.data.path))
        elif isinstance(focused, OptionList):
            option = focused.highlighted_option
            if option is not None and option.id:
                self.choose(option.id)

    def choose(self, spec: str) -> None:
        if self.busy:
            return
        self.busy = True
        self._detail(f"loading {spec}…")
        self._load(spec)

    @work(thread=True, exclusive=True, group="picker-load")
    def _load(self, spec: str) -> None:
        from engine.corpus import load_corpus

        notices: list[str] = []
        try:
            corpus = load_corpus(spec, lowercase=self.lowercase, encoding=self.encoding,
                                 corpora_dir=self.corpora_dir, on_notice=notices.append)
            if self.config is not None:
                from engine.training import check_length

                check_length(corpus, self.config)
        except CharlmError as error:
            self.app.call_from_thread(self._refused, spec, str(error))
            return
        except Exception as error:  # an engine bug must not take the app down
            self.app.call_from_thread(self._refused, spec, f"{type(error).__name__}: {error}")
            return
        self.app.call_from_thread(self._loaded, spec, corpus, notices)

    def _refused(self, spec: str, message: str) -> None:
        self.busy = False
        self._detail(f"{spec}: {message}")
        self.notify(message, title="Cannot use this corpus", severity="error", timeout=8)

    def _loaded(self, spec: str, corpus, notices: list[str]) -> None:
        self.busy = False
        remember_corpus(spec, corpus)
        for notice in notices:
            self.notify(notice, title="Corpus", severity="warning", timeout=8)
        self.dismiss((spec, corpus))

    def action_cancel(self) -> None:
        self.dismiss(None)
