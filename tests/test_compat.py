"""engine/compat.py holds every use of another library's private API. Each test here
fails, saying what to do, when the library changes under it: the private name is gone
(the workaround silently does nothing), or the library no longer needs the workaround."""

from __future__ import annotations

import pytest

from engine import compat


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
    before = compat.traced_function_count()
    assert before is not None, (
        "tensorflow.python.eager.context no longer lists traced functions: find another way "
        "for engine.compat.traced_function_count (bench/soak_memory.py and the retracing test "
        "in tests/test_reliability.py rely on it)")
    tripled = tf.function(lambda x: x * 3)  # listed while it lives
    tripled(tf.constant(1.0))
    assert compat.traced_function_count() > before
