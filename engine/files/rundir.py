"""A run directory: its life cycle, and the small files that say what the run is.

    model.keras       weights + optimizer state (the step count lives in the optimizer)
    model.prev.keras  the checkpoint before it, kept in case the newest is damaged
    model.best.keras  the epoch-end checkpoint with the lowest held-out loss (a hard link)
    model.sampler.npz, model.prev.sampler.npz
                      the sampler's weights in numpy, fingerprinted against the .keras
                      file each came from: text without TensorFlow (engine/files/sidecar.py)
    config.json       the full TrainConfig and what corpus it was trained on
    vocab.json        the characters, in id order
    state.json        wall-clock seconds and counters (informational)
    metrics.jsonl     one JSON object per logging interval and per epoch
    samples/          the text generated after each epoch (epoch-NNNN.txt)
    .lock             held by the process that trains here
    charlm-tui.log    the app's log; samples-*.txt are the app's exports

Every file is written to a temporary name, flushed to disk and renamed over the old
one, so a kill at any moment leaves the previous complete version in place
(engine/files/safeio.py). metrics.jsonl is append-only (engine/files/metrics.py); the checkpoints
are written and loaded by engine/files/checkpoints.py, vetted by engine/files/vetting.py.

The run directory is the user's disk: training starts only in a new or empty directory
or in a charlm-tui run (`RunDir.check_can_train`), writes and deletes only the names
above, and never writes through a symbolic link (files are created with O_NOFOLLOW,
temporaries with O_EXCL, and renaming over a link replaces the link, not its target).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path

from engine.config import SESSION_FIELDS, SettingError, TrainConfig, is_finite_number
from engine.errors import RunDirError
from engine.files.metrics import append_row, keep_rows_up_to, read_metrics
from engine.files.safeio import (
    MAX_NEW_FILE_ATTEMPTS,
    atomic_write_bytes,
    atomic_write_json,
    explain_os_error,
    fsync_dir,
    is_real_directory,
    open_directory,
    read_json,
    read_run_file,
    remove_names,
)

FORMAT_VERSION = 1


# Every name charlm-tui writes in a run directory; nothing else there is written or deleted.
PROJECT_FILES = ("model.keras", "model.prev.keras", "model.best.keras", "config.json", "vocab.json",
                 "state.json", "metrics.jsonl", ".lock", "charlm-tui.log")
# What a first start writes before config.json (which marks a run from then on): a
# directory holding only these is a start that was interrupted, and may be used.
STARTING_FILES = frozenset({".lock", "charlm-tui.log", "vocab.json"})
SAMPLE_NAME = re.compile(r"epoch-\d{4,}\.txt")
# .NAME.tmp-PID (atomic_write_bytes), .model-PID.tmp.keras and .model-prev-PID.tmp (save_model)
TEMPORARY_NAME = re.compile(r"\..+\.tmp-\d+|\.model-\d+\.tmp\.keras|\.model-(prev|best)-\d+\.tmp")


RUN_CONFIG_PEEK_BYTES = 4 << 20  # a config.json we wrote is a few KB


def save_rescue_run(save) -> Path:
    """Save what a run directory could not take in a new folder charlm-tui-rescue-DATE-XXXX,
    in the user's cache (it survives a reboot), else in the temporary folder: `save(run)`
    writes into the RunDir given. Returns the folder; raises RunDirError if neither takes it
    (a folder that failed is removed: it is a new one of ours)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    parents = [Path(tempfile.gettempdir())]
    with contextlib.suppress(RuntimeError):  # no home directory
        cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        parents.insert(0, Path(cache).expanduser() / "charlm-tui")
    problems = []
    for parent in parents:
        try:
            parent.mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix=f"charlm-tui-rescue-{stamp}-", dir=parent))
        except OSError as error:
            problems.append(str(explain_os_error(error, "create a folder in", parent)))
            continue
        try:
            save(RunDir(folder))
            return folder
        except RunDirError as error:
            shutil.rmtree(folder, ignore_errors=True)
            problems.append(str(error))
    raise RunDirError("; ".join(problems))


def _looks_like_run_config(path: Path) -> bool:
    """Whether `path` is a config.json that charlm-tui wrote (a JSON object with the format
    and the config), read only if it is a small regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode) or status.st_size > RUN_CONFIG_PEEK_BYTES:
            return False
        data = json.loads(os.read(fd, RUN_CONFIG_PEEK_BYTES))
    except (OSError, ValueError, RecursionError):
        return False
    finally:
        os.close(fd)
    return isinstance(data, dict) and "format" in data and isinstance(data.get("config"), dict)



class RunDir:
    def __init__(self, path):
        self.path = Path(path)
        self.model_path = self.path / "model.keras"
        self.previous_model_path = self.path / "model.prev.keras"
        self.best_model_path = self.path / "model.best.keras"  # the lowest held-out loss so far
        self.config_path = self.path / "config.json"
        self.vocab_path = self.path / "vocab.json"
        self.state_path = self.path / "state.json"
        self.metrics_path = self.path / "metrics.jsonl"
        self.samples_dir = self.path / "samples"
        self.lock_path = self.path / ".lock"
        self._lock_fd: int | None = None
        self.damaged_model = False  # loading found model.keras unloadable (engine/files/checkpoints.py)

    # -- creation and locking ---------------------------------------------------------
    def check_can_train(self, corpus_path=None) -> None:
        """Refuse, before anything is written, a directory that training could hurt.

        Training may use a directory that does not exist yet or is empty, one that is a
        charlm-tui run (its config.json is one charlm-tui wrote; other files next to it are
        left alone), or one holding only what a first start writes before config.json
        (.lock, charlm-tui.log, vocab.json, temporaries). The project's own files there must
        be regular files, not links (samples/ a real folder), and the corpus must not lie
        inside the directory. Raises RunDirError with a sentence saying what to do."""
        self._refuse_corpus_inside(corpus_path)
        try:
            status = os.stat(self.path)  # followed: --run may name a link to a folder
        except (FileNotFoundError, NotADirectoryError):
            return  # a new run directory
        except OSError as error:
            raise explain_os_error(error, "open", self.path) from None
        if not stat.S_ISDIR(status.st_mode):
            raise RunDirError(f"{self.path} exists and is not a directory; choose another --run")
        self._refuse_links_and_oddities()
        if _looks_like_run_config(self.config_path):
            return
        foreign = self._first_name_not_of_a_start()
        if foreign is None:
            return
        why = ("its config.json is not one charlm-tui wrote" if foreign == "config.json"
               else f"it holds {foreign!r}")
        raise RunDirError(f"{self.path} is not a charlm-tui run and is not empty ({why}); choose a new or "
                          "empty directory for --run, so that no file of yours is replaced or deleted")

    def _refuse_corpus_inside(self, corpus_path) -> None:
        if corpus_path is None:
            return
        corpus, run = Path(os.path.realpath(corpus_path)), Path(os.path.realpath(self.path))
        if corpus == run or run in corpus.parents:
            raise RunDirError(f"the corpus {corpus_path} lies inside the run directory {self.path}, where "
                              "training replaces and deletes files; move it out or choose another --run")

    def _refuse_links_and_oddities(self) -> None:
        for name in (*PROJECT_FILES, "samples"):
            path = self.path / name
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                continue
            except OSError as error:
                raise explain_os_error(error, "open", path) from None
            if stat.S_ISLNK(mode):
                raise RunDirError(f"{path} is a symbolic link and charlm-tui writes only real files in its "
                                  "run directory; remove the link or choose another --run")
            wanted = stat.S_ISDIR if name == "samples" else stat.S_ISREG
            if not wanted(mode):
                kind = "a folder" if name == "samples" else "a regular file"
                raise RunDirError(f"{path} is not {kind}; remove it or choose another --run")

    def _first_name_not_of_a_start(self) -> str | None:
        try:
            with os.scandir(self.path) as entries:
                for entry in entries:
                    if entry.name not in STARTING_FILES and not TEMPORARY_NAME.fullmatch(entry.name):
                        return entry.name
        except OSError as error:
            raise explain_os_error(error, "list", self.path) from None
        return None

    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise explain_os_error(error, "create the run directory", self.path) from None
        if not self.path.is_dir():
            raise RunDirError(f"{self.path} exists and is not a directory")

    def acquire(self) -> None:
        """Take the run directory for this process, or say which process has it."""
        self.create()
        try:  # never through a link; O_NONBLOCK: a FIFO there cannot hang us
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            fd = os.open(self.lock_path, flags, 0o644)
        except OSError as error:
            raise explain_os_error(error, "lock", self.lock_path) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise RunDirError(f"{self.lock_path} is not a regular file; remove it or choose another --run")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirError(f"{self.path} is in use by another charlm-tui process (pid {owner}); "
                              "stop it or choose another --run") from None
        with contextlib.suppress(OSError):  # the pid is informational; a full disk must not stop us
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def holds_lock(self) -> bool:
        """Whether this process's lock is still the run directory's .lock: false once the
        directory was deleted, moved or replaced (rm -rf RUN while training)."""
        if self._lock_fd is None:
            return False
        try:
            ours, there = os.fstat(self._lock_fd), os.stat(self.lock_path, follow_symlinks=False)
        except OSError:
            return False
        return (ours.st_dev, ours.st_ino) == (there.st_dev, there.st_ino)

    def release(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock_fd, 0)
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    def locked_by_another_process(self) -> bool:
        """Whether a trainer holds the run's flock. A shared lock is tried and dropped at once:
        a trainer starting in that instant is told the run is in use, a risk of microseconds."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return False  # no trainer has ever run here
        except OSError:
            return True  # cannot tell: do not write
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    @property
    def acquired(self) -> bool:
        """Whether this RunDir has taken the run directory (acquire)."""
        return self._lock_fd is not None

    # -- config and vocabulary -----------------------------------------------------------
    def has_checkpoint(self) -> bool:
        return self.model_path.exists() or self.previous_model_path.exists()

    def write_config(self, config: TrainConfig, corpus_meta: dict) -> None:
        # A session's stopping limits are not the run's: a later session must not inherit them.
        settings = {**config.to_json(), **{name: None for name in SESSION_FIELDS}}
        atomic_write_json(self.config_path, {"format": FORMAT_VERSION, "config": settings,
                                             "corpus": corpus_meta})

    def load_config(self) -> TrainConfig:
        data = read_json(self.config_path)
        try:
            if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
                raise ValueError("no config object in it")
            return TrainConfig.from_json(data["config"])
        except SettingError as error:  # name the field, whatever the sentence calls it
            detail = str(error) if str(error).startswith(error.field) else f"{error.field}: {error}"
            raise RunDirError(f"{self.config_path} is not a valid charlm-tui config ({detail})") from None
        except (KeyError, TypeError, ValueError) as error:
            raise RunDirError(f"{self.config_path} is not a valid charlm-tui config ({error})") from None

    def corpus_meta(self) -> dict:
        data = read_json(self.config_path)
        meta = data.get("corpus") if isinstance(data, dict) else None
        return meta if isinstance(meta, dict) else {}

    def write_vocab(self, vocab) -> None:
        atomic_write_json(self.vocab_path, {"format": FORMAT_VERSION, "vocab": list(vocab)})

    def load_vocab(self) -> tuple[str, ...]:
        data = read_json(self.vocab_path)
        vocab = data.get("vocab") if isinstance(data, dict) else None
        valid = (isinstance(vocab, list) and len(vocab) >= 2 and len(set(vocab)) == len(vocab)
                 and all(isinstance(ch, str) and len(ch) == 1 for ch in vocab))
        if not valid:
            raise RunDirError(f"{self.vocab_path} does not hold a list of distinct single characters")
        return tuple(vocab)

    # -- state, metrics, samples ------------------------------------------------------------
    def write_state(self, state: dict) -> None:
        atomic_write_json(self.state_path, state)

    def load_state(self) -> dict:
        """state.json is informational: anything missing or malformed in it reads as absent
        (a link, a FIFO or a huge file is refused, as every run file is)."""
        try:
            data = json.loads(read_run_file(self.state_path).decode("utf-8"))
        except (FileNotFoundError, ValueError, RecursionError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {key: value for key, value in data.items() if is_finite_number(value)}

    def append_metrics(self, row: dict) -> None:
        append_row(self.metrics_path, row)

    def read_metrics(self) -> list[dict]:
        return read_metrics(self.path)

    def keep_metrics_up_to(self, step: int) -> None:
        """On resume: drop rows logged after the checkpoint and the lives redone (keep_rows_up_to)."""
        keep_rows_up_to(self.metrics_path, step)

    def clear_history(self) -> None:
        """Start over: forget metrics, state and the epoch samples (the old model is replaced
        at the first checkpoint). Only the project's own names are removed, in the run
        directory itself: unlink removes a link, never its target, and a `samples` that is a
        link or not a folder is left alone (check_can_train refuses such a directory)."""
        remove_names(self.path, lambda name: name in (self.metrics_path.name, self.state_path.name),
                      follow_link=True)
        remove_names(self.samples_dir, lambda name: bool(SAMPLE_NAME.fullmatch(name)
                                                          or TEMPORARY_NAME.fullmatch(name)))

    # What a run is, moved aside whole by `move_aside` (the lock stays: this process holds it).
    RUN_NAMES = ("model.keras", "model.prev.keras", "model.best.keras", "model.sampler.npz",
                 "model.prev.sampler.npz", "model.best.sampler.npz",
                 "config.json", "vocab.json", "state.json", "metrics.jsonl", "samples")
    EXPORT_NAME = re.compile(r"samples-[^/]*\.txt")  # the app's exports (write_new_file)
    EPOCH_NAME = re.compile(r"model\.epoch-(\d{4,})\.(keras|sampler\.npz)")  # --keep-every

    def move_aside(self) -> Path | None:
        """Start over keeping the previous run whole: move its files into a new sibling
        folder RUN.prev-YYYYmmdd-HHMMSS and return it (None when there was no run here).
        Only the project's own names move, each by a rename inside one file system: a
        link is moved as a link, never followed (check_can_train refuses them anyway)."""
        fd = open_directory(self.path, follow_link=True)
        if fd is None:
            return None
        try:
            names = [entry.name for entry in os.scandir(fd)
                     if entry.name in self.RUN_NAMES or self.EXPORT_NAME.fullmatch(entry.name)
                     or self.EPOCH_NAME.fullmatch(entry.name)]
            if not {"config.json", "model.keras", "model.prev.keras"} & set(names):
                return None  # nothing trained here yet: nothing worth keeping
            aside = self._new_sibling()
            aside_fd = open_directory(aside, follow_link=False)
            if aside_fd is None:
                raise RunDirError(f"could not open {aside} to move the previous run there")
            try:
                for name in names:
                    os.rename(name, name, src_dir_fd=fd, dst_dir_fd=aside_fd)
            finally:
                os.close(aside_fd)
            fsync_dir(self.path)
            return aside
        except OSError as error:
            raise explain_os_error(error, "move the previous run out of", self.path) from None
        finally:
            os.close(fd)

    def _new_sibling(self) -> Path:
        """A new, empty folder next to the run, named after it and the time (made with
        mkdir, which fails on anything already there, so nothing is ever reused)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for attempt in range(MAX_NEW_FILE_ATTEMPTS):
            suffix = f"-{attempt + 1}" if attempt else ""
            candidate = self.path.parent / f"{self.path.name}.prev-{stamp}{suffix}"
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                continue
        raise RunDirError(f"could not find a free name next to {self.path} for the previous run")

    def write_samples(self, name: str, text: str) -> Path:
        try:
            self.samples_dir.mkdir(exist_ok=True)
        except OSError as error:
            raise explain_os_error(error, "create", self.samples_dir) from None
        if not is_real_directory(self.samples_dir):
            raise RunDirError(f"could not write the samples: {self.samples_dir} is a link or not a folder")
        path = self.samples_dir / f"{name}.txt"
        atomic_write_bytes(path, text.encode("utf-8"))
        return path

    def cleanup_temporaries(self) -> None:
        """Remove temp files a killed process left behind (only the names we give them)."""
        for folder, follow_link in ((self.path, True), (self.samples_dir, False)):
            with contextlib.suppress(RunDirError):
                remove_names(folder, lambda name: bool(TEMPORARY_NAME.fullmatch(name)),
                             follow_link=follow_link)


def load_config(run_dir) -> TrainConfig:
    return RunDir(run_dir).load_config()


def load_vocab(run_dir) -> tuple[str, ...]:
    return RunDir(run_dir).load_vocab()
