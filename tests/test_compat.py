"""engine/compat.py holds every use of another library's private API. Each test here
fails, saying what to do, when the library changes under it: the private name is gone
(the workaround silently does nothing), or the library no longer needs the workaround."""

from __future__ import annotations

import gc
from pathlib import Path

from engine import compat

ROOT = Path(__file__).resolve().parents[1]


def test_keras_still_has_the_skipset_function_that_leaks_per_checkpoint():
    saving_lib = compat.keras_saving_lib()
    assert saving_lib is not None, (
        "Keras moved keras.src.saving.saving_lib, so engine.compat.memoize_keras_skipsets "
        "does nothing: find where get_attr_skipset went, or check with bench/soak_memory.py "
        "that checkpoints no longer leak and remove the workaround")
    assert callable(getattr(saving_lib, "get_attr_skipset", None)), (
        "Keras no longer has saving_lib.get_attr_skipset, so engine.compat.memoize_keras_skipsets "
        "does nothing: check with bench/soak_memory.py whether checkpoints still leak")


def test_keras_still_builds_a_throwaway_optimizer_at_every_save(monkeypatch):
    """The leak the workaround stops: Keras's own cache of the skipsets misses every time."""
    from engine.tfsetup import keras

    saving_lib = compat.keras_saving_lib()
    skipset = saving_lib.get_attr_skipset
    keras_own = getattr(skipset, "keras_original", skipset)  # memoized by an earlier test or not
    optimizer = keras().optimizers.Optimizer
    made = []
    construct = optimizer.__init__
    monkeypatch.setattr(optimizer, "__init__", lambda self, *a, **k: (made.append(1), construct(self, *a, **k))[1])
    first = keras_own("Optimizer")
    keras_own("Optimizer")
    assert "variables" not in first and "learning_rate" in first  # what a skipset holds
    assert len(made) == 2, (
        "Keras's get_attr_skipset now caches its answer (the leak per checkpoint is fixed "
        "upstream): remove engine.compat.memoize_keras_skipsets and its calls in engine/rundir.py")


def test_the_memoized_skipsets_are_keras_own_answers():
    compat.memoize_keras_skipsets()
    saving_lib = compat.keras_saving_lib()
    memoized = saving_lib.get_attr_skipset
    for obj_type in ("Optimizer", "Layer", "Functional", "Metric", "Loss"):
        assert memoized(obj_type) == set(memoized.keras_original(obj_type))
        assert memoized(obj_type) is memoized(obj_type)


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


def test_keras_still_keeps_the_optimizer_step_where_sample_reads_it(tmp_path):
    """`sample` says which step its checkpoint was saved at, read from the weights file
    without Keras (engine.compat.saved_optimizer_step)."""
    import numpy as np

    from engine.model import build_model
    from engine.rundir import checkpoint_step
    from tests.conftest import tiny_config

    model = build_model(12, tiny_config())
    ids = np.random.default_rng(0).integers(0, 12, size=(5 * 16, 17)).astype("int32")
    model.fit(ids[:, :-1], ids[:, 1:], batch_size=16, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    assert checkpoint_step(tmp_path / "model.keras") == int(model.optimizer.iterations.numpy()) == 5, (
        f"Keras no longer keeps the optimizer's step at {compat.KERAS_ITERATIONS_DATASET} of "
        "model.weights.h5: find where it went (h5py's visit of a saved file shows it) and update "
        "engine.compat.saved_optimizer_step, or `sample` says 'step unknown'")


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
