"""A model that cannot fit this machine's memory is refused at once, in one sentence
(engine/scale/memory.py): by `train`, `train --dry-run` and the app before its screen opens,
and by the trainer with the corpus's real vocabulary."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine.config import preset
from engine.modeling.model import parameter_count
from engine.scale import memory
from tests.conftest import tiny_config
from tests.ptyrun import charlm_command, run_in_pty

HUGE = ["--units", "8192", "--layers", "16"]
GB = 10**9


def huge_config():
    return preset("fast", units=8192, layers=16)


def test_the_issues_model_is_8_billion_parameters_and_33_gb_of_weights():
    needed = memory.estimate(57, huge_config())
    assert needed.parameters == parameter_count(57, huge_config()) == 8_324_358_201
    assert needed.weights == 4 * needed.parameters == needed.gradients  # ~33 GB before Adam's moments
    assert needed.moments == 2 * needed.weights and needed.sampler == 2 * needed.weights
    # activations: 256 windows x 16 steps x 16 layers x 8192 units x 11 values, one-hot
    # input and three copies of the softmax at every position, 4 bytes each
    assert needed.activations == 4 * (256 * 16 * 16 * 8192 * 11 + 256 * 16 * 57 + 3 * 256 * 16 * 57)
    problem = memory.machine_problem(needed, huge_config(), on_gpu=False, memory=24 * 2**30)
    assert problem == (
        "an LSTM of 16 layers of 8,192 units (8,324,358,201 parameters) needs about 223 GB to train (weights "
        "33.3 GB, gradients 33.3 GB, Adam's moments 66.6 GB, activations for a batch 23.6 GB, the sampler's "
        "copy 66.6 GB), more than this machine's 25.8 GB; choose fewer --units or --layers")
    assert memory.machine_problem(needed, huge_config(), on_gpu=False, memory=300 * GB) is None


def test_with_a_gpu_the_machine_holds_the_weights_and_the_samplers_copy():
    needed = memory.estimate(57, huge_config())
    assert memory.machine_problem(needed, huge_config(), on_gpu=True, memory=101 * GB) is None
    assert "beside the GPU's" in memory.machine_problem(needed, huge_config(), on_gpu=True, memory=99 * GB)
    problem = memory.gpu_problem(needed, huge_config(), [80 * GB, 141 * GB])
    assert problem.startswith("an LSTM of 16 layers of 8,192 units (8,324,358,201 parameters) needs about "
                              "157 GB on each GPU to train")
    assert "more than the 80 GB TensorFlow can use there" in problem
    small = memory.estimate(57, tiny_config())
    assert memory.gpu_problem(small, tiny_config(), [GB]) is None


def test_big_batches_are_told_to_shrink_the_batch():
    config = preset("fast", batch_size=65536, maxlen=1000)
    problem = memory.machine_problem(memory.estimate(100, config), config, on_gpu=False, memory=24 * GB)
    assert problem.endswith("choose a smaller --batch-size or --maxlen, or fewer --units or --layers")


@pytest.mark.trains
def test_the_estimate_counts_what_keras_builds():
    from engine.modeling.model import build_model

    config = tiny_config(layers=2, units=12)
    model = build_model(30, config)
    assert memory.estimate(30, config).weights == 4 * model.count_params()
    model.optimizer.build(model.trainable_variables)  # Adam: the step, then two moments per weight
    moments = sum(int(v.numpy().size) for v in model.optimizer.variables) - 2  # (iterations, learning rate)
    assert memory.estimate(30, config).moments == 4 * moments


def test_the_trainer_refuses_before_writing_anything(tiny_corpus, tmp_path):
    from engine.errors import TrainingError
    from engine.run.training import Trainer

    needed = memory.estimate(len(tiny_corpus.vocab), tiny_config(units=8192, layers=16))
    if memory.machine_memory() is None or needed.total <= memory.machine_memory():
        pytest.skip("this machine could hold it")
    with pytest.raises(TrainingError, match="needs about 201 GB to train"):
        Trainer(tiny_corpus, tiny_config(units=8192, layers=16), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def needs_less_memory_than_the_huge_model():
    machine = memory.machine_memory()
    return machine is not None and memory.estimate(2, huge_config()).total > machine


refused_here = pytest.mark.skipif(not needs_less_memory_than_the_huge_model(),
                                  reason="this machine could train the issue's 8-billion-parameter model")


@refused_here
@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_train_refuses_it_at_once_without_tensorflow(dry_run, tiny_corpus_path, tmp_path):
    argv = ["train", "--corpus", str(tiny_corpus_path), "--run", str(tmp_path / "run"), *HUGE, *dry_run]
    code = ("import sys\nfrom tui.cli import main\n"
            f"code = main({argv!r})\n"
            "print('TF' if 'tensorflow' in sys.modules else 'no TF', code)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "no TF 2", out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charlm-tui: error: an LSTM of 16 layers of 8,192 units "
                                                   "(8,322,") and "more than this machine's" in lines[0]
    assert not (tmp_path / "run").exists()


@refused_here
def test_the_app_refuses_it_before_its_screen_opens(tiny_corpus_path, tmp_path):
    result = run_in_pty([*charlm_command(), "--corpus", str(tiny_corpus_path), "--run", str(tmp_path / "run"),
                         *HUGE], timeout=30)
    assert result.code == 2, result.text[-1000:]  # (None: the app opened and waited)
    assert b"\x1b[?1049h" not in result.output  # the screen never switched to the app's
    assert result.text.strip().startswith("charlm-tui: error: an LSTM of 16 layers of 8,192 units")


def test_the_dry_run_prints_the_estimate(tiny_corpus_path, tmp_path):
    out = subprocess.run([*charlm_command(), "train", "--corpus", str(tiny_corpus_path), "--run",
                          str(tmp_path / "run"), "--dry-run"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    line = next(line for line in out.stdout.splitlines() if line.startswith("Memory to train: about "))
    assert "Adam's moments" in line and "activations for a batch" in line and "this machine has" in line
