"""engine/compat.py holds every use of another library's private API. Each test here
fails, saying what to do, when the library changes under it: the private name is gone
(the workaround silently does nothing), or the library no longer needs the workaround."""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine import compat

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.trains
def test_keras_still_has_the_skipset_function_that_leaks_per_checkpoint():
    saving_lib = compat.keras_saving_lib()
    assert saving_lib is not None, (
        "Keras moved keras.src.saving.saving_lib, so engine.compat.memoize_keras_skipsets "
        "does nothing: find where get_attr_skipset went, or check with bench/soak_memory.py "
        "that checkpoints no longer leak and remove the workaround")
    assert callable(getattr(saving_lib, "get_attr_skipset", None)), (
        "Keras no longer has saving_lib.get_attr_skipset, so engine.compat.memoize_keras_skipsets "
        "does nothing: check with bench/soak_memory.py whether checkpoints still leak")


@pytest.mark.trains
def test_keras_still_builds_a_throwaway_optimizer_at_every_save(monkeypatch):
    """The leak the workaround stops: Keras's own cache of the skipsets misses every time."""
    from engine.tfsetup import keras

    saving_lib = compat.keras_saving_lib()
    skipset = saving_lib.get_attr_skipset
    keras_own = getattr(skipset, "keras_original", skipset)  # memoized by an earlier test or not
    optimizer = keras().optimizers.Optimizer
    made = []
    construct = optimizer.__init__
    monkeypatch.setattr(optimizer, "__init__",
                        lambda self, *a, **k: (made.append(1), construct(self, *a, **k))[1])
    first = keras_own("Optimizer")
    keras_own("Optimizer")
    assert "variables" not in first and "learning_rate" in first  # what a skipset holds
    assert len(made) == 2, (
        "Keras's get_attr_skipset now caches its answer (the leak per checkpoint is fixed "
        "upstream): remove engine.compat.memoize_keras_skipsets and its calls in engine/files/checkpoints.py")


@pytest.mark.trains
def test_the_memoized_skipsets_are_keras_own_answers():
    compat.memoize_keras_skipsets()
    saving_lib = compat.keras_saving_lib()
    memoized = saving_lib.get_attr_skipset
    for obj_type in ("Optimizer", "Layer", "Functional", "Metric", "Loss"):
        assert memoized(obj_type) == set(memoized.keras_original(obj_type))
        assert memoized(obj_type) is memoized(obj_type)


@pytest.mark.trains
def test_tensorflow_still_lists_the_functions_it_traced():
    from engine.tfsetup import tensorflow

    tf = tensorflow()
    # Earlier tests' models may still be collected, taking their functions off the list
    # while this one is added: collect them first, and nothing during the count.
    gc.collect()
    gc.disable()
    try:
        before = compat.traced_function_count()
        assert before is not None, (
            "tensorflow.python.eager.context no longer lists traced functions: find another way "
            "for engine.compat.traced_function_count (bench/soak_memory.py and the retracing test "
            "in tests/test_reliability.py rely on it)")
        tripled = tf.function(lambda x: x * 3)  # listed while it lives
        tripled(tf.constant(1.0))
        assert compat.traced_function_count() > before
    finally:
        gc.enable()


# -- nothing else reaches into another library ------------------------------------------------

OURS = ("engine", "tui", "tests", "bench")
COMPAT_MODULES = {Path("engine/compat.py"), Path("tui/compat.py")}
INTERNAL_PACKAGES = ("keras.src", "tensorflow.python")  # what their public modules re-export
DOCUMENTED = {"os._exit", "sys._getframe"}  # underscored, yet public
PENDING: set[str] = set()  # a use being replaced elsewhere, while it is


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_module(module: str) -> bool:
    return any(_private(part) for part in module.split(".")) or module.startswith(INTERNAL_PACKAGES)


def _private_uses(path: Path) -> list[str]:
    """Imports of a library's private or internal modules and names, and reads of a
    private attribute of something imported from a library (getattr with a "_name" too)."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported: dict[str, str] = {}  # a name bound by an import of a library -> what it is
    found = _private_imports(tree, imported) + _private_reads(tree, imported)
    return [f"{path}:{use}" for use in found]


def _private_imports(tree, imported: dict[str, str]) -> list[str]:
    import ast

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in OURS:
                    continue
                bound = alias.asname or alias.name.split(".")[0]  # import a.b binds a; import a.b as c, c
                imported[bound] = alias.name if alias.asname else bound
                if _private_module(alias.name):
                    found.append(f"{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] not in OURS:
            for alias in node.names:
                imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                if _private_module(node.module) or _private(alias.name):
                    found.append(f"{node.lineno}: from {node.module} import {alias.name}")
    return found


def _private_reads(tree, imported: dict[str, str]) -> list[str]:
    import ast

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in imported:
                name = ast.unparse(node)
                if imported[root.id] + name[len(root.id):] not in DOCUMENTED | PENDING:
                    found.append(f"{node.lineno}: {name}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr", "setattr", "delattr") and len(node.args) >= 2
              and isinstance(node.args[0], ast.Name) and node.args[0].id not in ("self", "cls")
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and _private(node.args[1].value)):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_private_api_of_another_library_outside_the_compat_module():
    sources = sorted(path.relative_to(ROOT) for folder in OURS for path in (ROOT / folder).rglob("*.py"))
    found = [use for path in sources if path not in COMPAT_MODULES for use in _private_uses(ROOT / path)]
    assert not found, ("private APIs of other libraries (use a public one, or move the use into "
                       "engine/compat.py with a test here): " + "; ".join(found))


# -- tui/compat.py -------------------------------------------------------------------------------

def test_textual_still_draws_on_sys_stderr():
    """tui.compat.stderr_to_log gives Textual a duplicate of the terminal through
    sys.__stderr__ (Textual has no option to draw elsewhere), so that TensorFlow's C++
    log lines on fd 2 go to a log file instead of the screen."""
    import inspect

    from textual.drivers.linux_driver import LinuxDriver

    source = inspect.getsource(LinuxDriver.__init__)
    assert "sys.__stderr__" in source, (
        "Textual's LinuxDriver no longer draws on sys.__stderr__: tui/compat.py's stderr_to_log "
        "must find the new way to keep TensorFlow's fd 2 output off the screen")


@pytest.mark.trains
def test_keras_still_keeps_the_optimizer_step_where_sample_reads_it(tmp_path):
    """`sample` says which step its checkpoint was saved at, read from the weights file
    without Keras (engine.compat.saved_optimizer_step)."""
    import numpy as np

    from engine.files.vetting import checkpoint_step
    from engine.modeling.model import build_model
    from tests.conftest import tiny_config

    model = build_model(12, tiny_config())
    ids = np.random.default_rng(0).integers(0, 12, size=(5 * 16, 17)).astype("int32")
    model.fit(ids[:, :-1], ids[:, 1:], batch_size=16, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    assert checkpoint_step(tmp_path / "model.keras") == int(model.optimizer.iterations.numpy()) == 5, (
        f"Keras no longer keeps the optimizer's step at {compat.KERAS_ITERATIONS_DATASET} of "
        "model.weights.h5: find where it went (h5py's visit of a saved file shows it) and update "
        "engine.compat.saved_optimizer_step, or `sample` says 'step unknown'")


@pytest.mark.trains
def test_tensorflow_still_reports_each_devices_memory_through_device_lib():
    """engine.compat.gpu_memory_bytes reads a GPU's size where TensorFlow's public API has
    none; on this CPU machine the same call must still list devices with their limits."""
    from engine.tfsetup import tensorflow

    tensorflow()
    devices = compat.device_memory_limits()
    assert devices and ("CPU", devices[0][1]) in devices and all(size > 0 for _, size in devices), (
        "tensorflow.python.client.device_lib.list_local_devices no longer reports memory_limit: "
        "engine.compat.gpu_memory_bytes returns None, and the model's memory is checked against "
        "the machine's memory only; find where TensorFlow reports a GPU's memory now")
    if not tensorflow().config.list_physical_devices("GPU"):
        assert compat.gpu_memory_bytes() is None


# -- a terminal that goes away under Textual (tui/compat.py) ----------------------------------------

class _GoneTerminal:
    """A terminal after a hangup: every write fails with EIO."""

    def write(self, text):
        raise OSError(errno.EIO, "Input/output error")

    def flush(self):
        raise OSError(errno.EIO, "Input/output error")

    def fileno(self):
        return 1


def _writes_finish(writer, count: int, within: float) -> bool:
    """Whether `count` writes to a Textual WriterThread return within `within` seconds
    (a thread of its own makes them: if they block, it is left blocked, a daemon)."""
    done = threading.Event()

    def write():
        for _ in range(count):
            writer.write("x")
        done.set()

    threading.Thread(target=write, daemon=True).start()
    return done.wait(within)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_textual_still_lets_its_writer_thread_die_at_a_failed_write_and_then_blocks():
    """Why tui/compat.stderr_to_log gives Textual a Guarded stream: with a terminal gone,
    Textual's writer thread dies and its bounded queue then blocks every writer (the
    event loop, and the shutdown's WriterThread.stop) for good."""
    from textual.drivers.linux_driver import WriterThread  # the class the driver draws with

    writer = WriterThread(_GoneTerminal())
    writer.start()
    writer.write("the first write fails")
    writer.join(5)
    assert not _writes_finish(writer, 100, within=1.0), (
        "Textual's writer thread now survives a failed write (or its queue is unbounded): "
        "tui/compat.stderr_to_log's Guarded stream may no longer be needed")


def test_the_guarded_stream_keeps_textuals_writer_alive_and_reports_the_terminal_gone():
    from textual.drivers.linux_driver import WriterThread  # the class the driver draws with

    from tui.streams import Guarded

    reported = []
    writer = WriterThread(Guarded(_GoneTerminal(), on_lost=reported.append))
    writer.start()
    assert _writes_finish(writer, 100, within=10.0), "writes blocked behind a dead writer thread"
    writer.stop()  # returns: the thread is alive and drains its queue
    assert not writer.is_alive()
    assert reported == [signal.SIGHUP], "the lost terminal is reported once, as a hangup"


class _StandIn:
    """Enough of an App for a driver whose input is read but never dispatched."""

    def call_later(self, *args, **kwargs):
        pass


@contextlib.contextmanager
def _driver_reading(driver_class, data: bytes, close: bool, monkeypatch):
    """A Textual Linux driver (of `driver_class`) whose input is a pipe holding `data`,
    at its end if `close`; yields (driver, count of selects), the input thread running."""
    import selectors

    read_end, write_end = os.pipe()
    os.write(write_end, data)
    if close:
        os.close(write_end)
    selects = []

    class CountingSelector(selectors.SelectSelector):
        def select(self, timeout=None):
            selects.append(1)
            return super().select(timeout)

    monkeypatch.setattr(selectors, "SelectSelector", CountingSelector)
    monkeypatch.setattr(sys, "__stdin__", os.fdopen(read_end, "rb", buffering=0))
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTSTP, signal.SIGCONT)}
    driver = driver_class(_StandIn(), debug=False, mouse=False, size=(80, 24))
    thread = threading.Thread(target=driver.run_input_thread, daemon=True)
    thread.start()
    try:
        yield driver, selects
    finally:
        driver.exit_event.set()
        thread.join(5)
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        sys.__stdin__.close()
        if not close:
            os.close(write_end)
    assert not thread.is_alive(), "the input thread did not end when told to"


async def test_textual_still_reads_its_input_again_and_again_once_it_has_ended(monkeypatch):
    """Why tui/compat.terminal_driver replaces the input loop: at the end of its input
    Textual's LinuxDriver selects and reads in a busy loop (upstream:
    Textualize/textual#6690)."""
    from textual.drivers.linux_driver import LinuxDriver

    with _driver_reading(LinuxDriver, b"", close=True, monkeypatch=monkeypatch) as (driver, selects):
        time.sleep(0.5)
        spins = len(selects)
    assert spins > 100, (
        f"Textual's input loop selected {spins} times in 0.5 s at the end of its input: it no longer "
        "spins there (Textualize/textual#6690 landed?). tui/compat.terminal_driver may now only need "
        "to learn that the input ended, or go")


async def test_the_drivers_input_loop_reports_its_end_once_and_stops_reading(monkeypatch):
    from tui import compat

    ended = []
    driver_class = compat.terminal_driver(on_input_end=lambda: ended.append(1))
    with _driver_reading(driver_class, b"", close=True, monkeypatch=monkeypatch) as (driver, selects):
        wait = time.monotonic() + 5
        while not ended and time.monotonic() < wait:
            time.sleep(0.01)
        time.sleep(0.3)
        spins = len(selects)
    assert ended == [1] and spins < 10, (ended, spins)


async def test_the_drivers_input_loop_passes_keys_on_as_textuals_does(monkeypatch):
    """The replaced loop parses input with Textual's own parser: a key is a Key event."""
    from textual import events

    from tui import compat

    keys = []

    class Recording(compat.terminal_driver(on_input_end=lambda: None)):
        def process_message(self, message):
            if isinstance(message, events.Key):
                keys.append(message.key)

    with _driver_reading(Recording, b"q", close=False, monkeypatch=monkeypatch):
        wait = time.monotonic() + 5
        while not keys and time.monotonic() < wait:
            time.sleep(0.01)
    assert keys == ["q"]


def test_the_terminal_modes_are_given_back_by_hand(monkeypatch):
    """What the watchdog does when Textual cannot: the input settings as they were, the
    alternate screen and mouse reporting off."""
    import pty
    import termios

    from tui import compat

    master, slave = pty.openpty()
    try:
        monkeypatch.setattr(sys, "__stdin__", os.fdopen(os.dup(slave), "rb", buffering=0))
        before = termios.tcgetattr(slave)
        modes = compat.TerminalModes(slave)
        raw = termios.tcgetattr(slave)
        raw[3] &= ~(termios.ECHO | termios.ICANON)
        termios.tcsetattr(slave, termios.TCSANOW, raw)
        modes.restore()
        assert termios.tcgetattr(slave) == before
        written = os.read(master, 4096)
        assert b"\x1b[?1049l" in written and b"\x1b[?1000l" in written and b"\x1b[?25h" in written
    finally:
        sys.__stdin__.close()
        os.close(master)
        os.close(slave)


@pytest.mark.trains
def test_autograph_writes_into_the_scratch_folder_and_the_process_keeps_its_temporary_folder(tmp_path):
    code = ("import os, sys, tempfile\n"
            "before = tempfile.gettempdir()\n"
            "from engine.tfsetup import keras\n"
            "keras()\n"
            "from tensorflow.python.autograph.pyct import loader\n"
            "module, name = loader.load_source('x = 1\\n', delete_on_exit=True)\n"
            "print(tempfile.gettempdir() == before, tempfile.tempdir in (None, before),\n"
            "      os.path.basename(os.path.dirname(name)).startswith(f'charlm-tf-{os.getpid()}-'))\n")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    keeps, untouched, in_scratch = out.stdout.split()
    assert (keeps, untouched) == ("True", "True"), \
        "importing TensorFlow changed the process's temporary folder"
    assert in_scratch == "True", (
        "TensorFlow's autograph no longer writes through tensorflow.python.autograph.pyct.loader's "
        "tempfile, so engine.compat.autograph_files_in does nothing: find where it writes its files now")
