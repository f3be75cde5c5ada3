"""Choose a corpus: a path typed or pasted (with completion), a recent one, the named
corpora, corpora/*.txt, or any file or folder found by browsing (up to the disk's root).

Sizes and vocabularies are computed on a worker thread (a corpus is read in full to
know its vocabulary) and cached for the session under what was really read, so
reopening the picker is instant and one corpus's figures never show under another's
name. Choosing loads the corpus off the event loop too; a corpus the engine refuses is
reported and the picker stays open, so the current run is never stopped for nothing.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.suggester import Suggester
from textual.widgets import DirectoryTree, Input, Label, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from engine.errors import CharlmError
from tui.visible import visible_line

RECENT_SHOWN = 5      # recent corpora listed above the named ones
PROBE_TIMEOUT = 3.0   # seconds to learn whether a download could start (vs ~12 s to fail)
RECENT_PREFIX = "recent:"  # option ids of the recent entries (the named ones are their names)


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


# -- what a spec names, and the figures of what was read --------------------------------------
def _as_path(spec: str) -> Path | None:
    """The file or folder `spec` names on disk (load_corpus tries a path first), or None."""
    try:
        path = Path(spec).expanduser()
        return path if spec.strip() and path.exists() else None
    except (OSError, RuntimeError, ValueError):  # "~nobody", a NUL in the name...
        return None


def _corpora_file(spec: str, corpora_dir: Path | None) -> Path | None:
    """The corpora/<spec>.txt that a name loads (it replaces a built-in of that name)."""
    from engine.data.corpus import named_corpora

    try:
        named = named_corpora(corpora_dir).get(spec)
    except (OSError, CharlmError):
        return None
    return Path(named) if named and Path(named).is_file() else None


def canonical_spec(spec: str, corpora_dir: Path | None = None) -> str:
    """What `spec` would load, named so that it cannot be confused with anything else:
    the absolute path of a file or folder (given as a path or as a corpora/ name), or
    the built-in's name."""
    path = _as_path(spec) or _corpora_file(spec, corpora_dir)
    return str(path.resolve()) if path is not None else spec


def loaded_spec(spec: str, corpus, corpora_dir: Path | None = None) -> str:
    """The canonical spec of what was really loaded for `spec`: that of `spec` itself,
    unless a built-in fell back to another (offline, "nietzsche" loads pydocs)."""
    canonical = canonical_spec(spec, corpora_dir)
    if canonical == spec and corpus.name != spec and _as_path(spec) is None:
        return corpus.name  # a description (a swapped-in corpus's source) or a fallback
    return canonical


# (canonical spec, mtime, size, lowercase, encoding) -> CorpusInfo, for every picker of
# the session. A file's key changes with its contents; corpora/nietzsche.txt appearing
# changes what "nietzsche" names, hence its key.
_INFO_CACHE: dict[tuple, CorpusInfo] = {}
_CACHE_LOCK = threading.Lock()


def _cache_key(canonical: str, lowercase: bool, encoding: str | None) -> tuple:
    try:
        stat = os.stat(canonical)
        return (canonical, stat.st_mtime_ns, stat.st_size, lowercase, encoding)
    except OSError:
        return (canonical, None, None, lowercase, encoding)


def corpus_info(spec: str, lowercase: bool, encoding: str | None = None,
                corpora_dir: Path | None = None) -> CorpusInfo:
    """Size and vocabulary of a corpus (reads it; call off the event loop)."""
    from engine.data.corpus import load_corpus

    canonical = canonical_spec(spec, corpora_dir)
    key = _cache_key(canonical, lowercase, encoding)
    with _CACHE_LOCK:
        if key in _INFO_CACHE:
            return _INFO_CACHE[key]
    needs = availability(spec, corpora_dir)
    try:
        corpus = load_corpus(spec, lowercase=lowercase, encoding=encoding, corpora_dir=corpora_dir)
    except CharlmError as error:
        info = CorpusInfo(error=str(error))
    else:
        _remember_info(loaded_spec(spec, corpus, corpora_dir), corpus, encoding)
        if needs.fallback is not None and corpus.name == needs.fallback:  # not this one
            return CorpusInfo(note=f"not on this machine ({corpus.name} would be used)")
        return CorpusInfo(len(corpus), len(corpus.vocab))
    with _CACHE_LOCK:
        _INFO_CACHE[key] = info
    return info


def _remember_info(canonical: str, corpus, encoding: str | None) -> None:
    with _CACHE_LOCK:
        _INFO_CACHE[_cache_key(canonical, corpus.lowercase, encoding)] = \
            CorpusInfo(len(corpus), len(corpus.vocab))


def remember_corpus(spec: str, corpus, encoding: str | None = None,
                    corpora_dir: Path | None = None) -> None:
    """A corpus the app loaded (the one it trains on): its figures for the picker, under
    what was really read, and the first place in the recent list."""
    from tui.recent import add_recent

    canonical = loaded_spec(spec, corpus, corpora_dir)
    _remember_info(canonical, corpus, encoding)
    add_recent(canonical)


# -- built-ins that are fetched or built on first use ---------------------------------------
FIRST_USE_NOTES = {
    "nietzsche": "not on this machine: downloaded when chosen",
    "pydocs": "Python's docstrings, collected on first use",
}


def availability(spec: str, corpora_dir: Path | None):
    """What loading `spec` would take first (a download, a build), as the engine says
    (engine.data.corpus.availability); a folder that cannot be looked at takes nothing."""
    from engine.data.corpus import Availability, availability

    try:
        return availability(spec, corpora_dir)
    except OSError:
        return Availability()


def download_blocked(url: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None when a download of `url` could start (its host, or the proxy urllib would
    use, accepts a connection within `timeout` seconds), else why not, in a few words.
    Offline this answers at once, where the download itself takes seconds to fail."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_parts.hostname or host, proxy_parts.port or 80
    outcome: dict[str, object] = {}

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome["ok"] = True
        except OSError as error:
            outcome["error"] = error

    # A thread: a name lookup takes no timeout, and a stalled one must not hold the picker.
    thread = threading.Thread(target=connect, name="charlm-download-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if outcome.get("ok"):
        return None
    error = outcome.get("error")
    if isinstance(error, socket.gaierror):
        return f"{host} cannot be looked up: offline?"
    if isinstance(error, OSError):
        return f"{host}:{port}: {(error.strerror or str(error) or type(error).__name__).lower()}"
    return f"no answer from {host} in {timeout:.0f} s"


# -- typing a path ------------------------------------------------------------------------------
class PathSuggester(Suggester):
    """Completes the last part of a typed path with a file or folder name found there
    (a folder ends with /), as a shell's Tab does; → accepts it. Hidden names only when
    the typed part starts with a dot."""

    MAX_ENTRIES = 5000  # a huge folder is not listed in full on every key

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)  # the disk changes

    async def get_suggestion(self, value: str) -> str | None:
        if not value.strip():
            return None
        try:
            folder, stem = os.path.split(os.path.expanduser(value))
            with os.scandir(folder or ".") as entries:
                names = [(entry.name, entry.is_dir()) for entry in
                         itertools.islice(entries, self.MAX_ENTRIES)]
        except (OSError, ValueError):
            return None
        matches = [(name, is_dir) for name, is_dir in names if name.startswith(stem) and
                   (stem.startswith(".") or not name.startswith(".")) and stem]
        if not matches:
            return None
        # Folders and .txt files first: what a corpus is made of.
        name, is_dir = min(matches, key=lambda m: (not (m[1] or m[0].endswith(".txt")), m[0]))
        suggestion = value + name[len(stem):] + (os.sep if is_dir else "")
        return suggestion if suggestion != value else None


def _typed_path(value: str) -> str:
    """A typed or pasted path, without the quotes a file manager may put around it."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return os.path.expanduser(value)


class PlainDirectoryTree(DirectoryTree):
    """A DirectoryTree with plain-text icons (emoji are double width in some terminals)
    that can move up: Backspace re-roots it at its parent folder."""

    BINDINGS = [Binding("backspace", "up_folder", "Up a folder", show=False)]
    ICON_NODE_EXPANDED = "▾ "
    ICON_NODE = "▸ "
    ICON_FILE = "  "

    def filter_paths(self, paths):
        return [path for path in paths if not path.name.startswith(".")]

    def process_label(self, label) -> Text:
        """A file name is drawn as text: its control characters shown (tui/visible.py)."""
        return super().process_label(Text(visible_line(label)) if isinstance(label, str) else label)

    def action_up_folder(self) -> None:
        here = Path(self.path).resolve()
        if here.parent != here:
            self.path = here.parent


def _display(spec: str) -> str:
    """A recent entry as listed: a path under the home folder with ~, a name as it is."""
    from tui.widgets.header import display_path

    if not os.path.isabs(spec):
        return spec
    shown = display_path(spec)
    home = str(Path.home())
    if os.path.isabs(shown) and (shown == home or shown.startswith(home + os.sep)):
        shown = "~" + shown[len(home):]
    return shown


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
        self.recent: list[str] = []        # canonical specs, newest first
        self.infos: dict[str, CorpusInfo] = {}  # option id -> its figures
        self.busy = False

    def compose(self) -> ComposeResult:
        from engine.data.corpus import named_corpora
        from tui.recent import load_recent

        try:
            self.entries = named_corpora(self.corpora_dir)
        except (OSError, CharlmError):
            self.entries = {}
        self.recent = load_recent()[:RECENT_SHOWN]
        options: list[Option | None] = [Option(self._prompt(RECENT_PREFIX + spec), id=RECENT_PREFIX + spec)
                                        for spec in self.recent]
        if options:
            options.append(None)  # a line between the recent corpora and the named ones
        options += [Option(self._prompt(name), id=name) for name in self.entries]
        with Vertical(classes="dialog", id="picker"):
            yield Label("Choose a corpus", classes="dialog-title")
            yield Input(placeholder="type or paste a path (→ completes it, Enter uses it)",
                        suggester=PathSuggester(), compact=True, id="path")
            named = OptionList(*options, id="named")
            named.border_title = ("recent · named corpora · corpora/*.txt" if self.recent else
                                  "named corpora · corpora/*.txt")
            yield named
            yield Static("…or browse (Enter: a file · u: a folder of .txt files · Backspace: up)",
                         classes="dialog-help")
            yield PlainDirectoryTree(self.browse_root, id="browser")
            yield Static("", id="picker-detail", markup=False)
            yield Static("Enter: train on it · Tab: path, list, files · Esc: cancel",
                         classes="dialog-hint")

    def on_mount(self) -> None:
        tree = self.query_one("#browser", DirectoryTree)
        if not self.browse_root.is_absolute():
            tree.root.set_label(f"{self.browse_root}{os.sep}")  # "." alone reads as nothing
        option_list = self.query_one("#named", OptionList)
        if self.current in self.entries:
            option_list.highlighted = option_list.get_option_index(self.current)
        self.query_one("#path", Input).focus()  # it invites a path: typing goes there; Tab, the list
        self.measure_listed()

    # -- sizes and vocabularies, off the event loop --------------------------------------
    @work(thread=True, exclusive=True, group="picker-info")
    def measure_listed(self) -> None:
        worker = get_current_worker()
        listed = [(RECENT_PREFIX + spec, spec) for spec in self.recent] + \
            [(name, name) for name in self.entries]
        for option_id, spec in listed:
            if worker.is_cancelled:
                return
            self.app.call_from_thread(self._set_info, option_id, self._measure(spec))

    def _measure(self, spec: str) -> CorpusInfo:
        needs = availability(spec, self.corpora_dir)
        if needs.first_use is not None:  # (measuring it would fetch or build it)
            return CorpusInfo(note=FIRST_USE_NOTES[needs.builtin])
        return corpus_info(spec, self.lowercase, self.encoding, self.corpora_dir)

    def _set_info(self, option_id: str, info: CorpusInfo) -> None:
        self.infos[option_id] = info
        if self.is_attached:
            self.query_one("#named", OptionList).replace_option_prompt(option_id, self._prompt(option_id))

    def _prompt(self, option_id: str) -> Text:
        info = self.infos.get(option_id)
        recent = option_id.startswith(RECENT_PREFIX)
        name = _display(option_id[len(RECENT_PREFIX):]) if recent else option_id
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"{visible_line(name):<14}", style="bold")
        text.append(" ")
        if info is None:
            text.append("measuring…", style="dim italic")
        elif info.error:
            text.append(info.describe(), style="red")
        else:
            text.append(info.describe(), style="" if info.chars is not None else "dim italic")
        if not recent and name == self.current:
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
        info = corpus_info(path, self.lowercase, self.encoding, self.corpora_dir)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._detail, f"{path}: {info.describe()}")

    def _detail(self, text: str) -> None:
        if self.is_attached:
            self.query_one("#picker-detail", Static).update(visible_line(text))

    # -- choosing --------------------------------------------------------------------------
    @on(Input.Submitted, "#path")
    def _path_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        path = _typed_path(event.value)
        if not path:
            self._detail("type the path of a file, or of a folder of .txt files")
            return
        self.choose(path)

    @on(OptionList.OptionSelected, "#named")
    def _named_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option_id:
            self.choose(event.option_id.removeprefix(RECENT_PREFIX))

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
                self.choose(option.id.removeprefix(RECENT_PREFIX))

    def choose(self, spec: str) -> None:
        if self.busy:
            return
        self.busy = True
        self._detail(f"loading {spec}…")
        self._load(spec)

    @work(thread=True, exclusive=True, group="picker-load")
    def _load(self, spec: str) -> None:
        from engine.data import corpus as corpus_module

        needs = availability(spec, self.corpora_dir)
        if needs.first_use == "download":
            blocked = download_blocked(needs.url)
            if blocked is not None:
                folder = self.corpora_dir or corpus_module.default_corpora_dir()
                self.app.call_from_thread(self._refused, spec, (
                    f"the {spec} corpus is not on this machine and cannot be downloaded ({blocked}): "
                    f"put {corpus_module.NIETZSCHE_FILE} in {folder} to use it offline, or choose pydocs"))
                return
        notices: list[str] = []
        try:
            corpus = corpus_module.load_corpus(spec, lowercase=self.lowercase, encoding=self.encoding,
                                               corpora_dir=self.corpora_dir, on_notice=notices.append)
            if self.config is not None:
                from engine.data.windows import check_length

                check_length(corpus, self.config)
        except CharlmError as error:
            self.app.call_from_thread(self._refused, spec, str(error))
            return
        except Exception as error:  # an engine bug must not take the app down
            self.app.call_from_thread(self._refused, spec, f"{type(error).__name__}: {error}")
            return
        if needs.fallback is not None and corpus.name == needs.fallback:
            # The download failed after all and the engine fell back to another corpus:
            # the user chose this one, so say so rather than train on the other.
            _remember_info(corpus.name, corpus, self.encoding)
            self.app.call_from_thread(self._refused, spec, notices[0] if notices else
                                      f"{spec} could not be loaded ({corpus.name} would be used)")
            return
        self.app.call_from_thread(self._loaded, spec, corpus, notices)

    def _refused(self, spec: str, message: str) -> None:
        self.busy = False
        self._detail(f"{spec}: {message}")
        self.notify(message, title="Cannot use this corpus", severity="error", timeout=8)

    def _loaded(self, spec: str, corpus, notices: list[str]) -> None:
        self.busy = False
        remember_corpus(spec, corpus, self.encoding, self.corpora_dir)
        for notice in notices:
            self.notify(notice, title="Corpus", severity="warning", timeout=8)
        self.dismiss((spec, corpus))

    def action_cancel(self) -> None:
        self.dismiss(None)
