"""`charlm-tui sample` as a user reads it: which checkpoint and step, each temperature's
samples together, greedy named, a seed primed once however many samples follow it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from engine.files import checkpoints
from tests.conftest import tiny_config, tiny_text
from tests.ptyrun import charlm_command, run_in_pty

STEPS = 3


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run directory whose checkpoint was saved after STEPS optimizer steps."""
    from engine.data.corpus import load_corpus
    from engine.files.rundir import RunDir
    from engine.modeling.model import build_model

    folder = tmp_path_factory.mktemp("sampled")
    corpus_path = folder / "tiny.txt"
    corpus_path.write_text(tiny_text(), encoding="utf-8")
    corpus = load_corpus(corpus_path, lowercase=False)
    config = tiny_config()
    run = RunDir(folder / "run")
    run.create()
    run.write_config(config, {"name": corpus.name, "source": str(corpus_path), "chars": len(corpus),
                              "vocab_size": len(corpus.vocab), "excerpts": [corpus.text(0, 60)]})
    run.write_vocab(corpus.vocab)
    model = build_model(len(corpus.vocab), config)
    windows = corpus.ids[: STEPS * 16 * 17].astype("int32").reshape(STEPS * 16, 17)
    model.fit(windows[:, :-1], windows[:, 1:], batch_size=16, epochs=1, verbose=0, shuffle=False)
    assert int(model.optimizer.iterations.numpy()) == STEPS
    checkpoints.save_model(run, model)
    return run.path


def sample(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*charlm_command(), "sample", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.trains
def test_sample_says_which_checkpoint_and_step_it_used(trained_run):
    out = run_in_pty([*charlm_command(), "sample", "--run", str(trained_run), "--length", "20", "--seed",
                      "1"], timeout=60)
    assert out.code == 0, out.text
    assert out.text.splitlines()[0] == f"--- Checkpoint: {trained_run / 'model.keras'} (step {STEPS:,})"
    result = json.loads(sample("--run", str(trained_run), "--length", "20", "--json").stdout)
    assert (result["checkpoint"], result["step"]) == (str(trained_run / "model.keras"), STEPS)


@pytest.mark.trains
def test_each_temperatures_samples_come_together_and_greedy_is_named(trained_run):
    out = sample("--run", str(trained_run), "--length", "20", "--seed", "1", "--num-samples", "2",
                 "--temperatures", "0,1")
    assert out.returncode == 0, out.stderr
    titles = [line for line in out.stdout.splitlines() if line.startswith("----- temperature")]
    assert titles == ["----- temperature: 0.0 (greedy) (sample 1 of 2)",
                      "----- temperature: 0.0 (greedy) (sample 2 of 2)",
                      "----- temperature: 1.0 (sample 1 of 2)", "----- temperature: 1.0 (sample 2 of 2)"]


def test_sample_help_explains_every_option():
    out = subprocess.run([sys.executable, "-m", "tui.cli", "sample", "--help"], capture_output=True,
                         text=True)
    help_of = out.stdout.split("--temperatures TEMPERATURES", 2)[-1].split("--length")[0]
    assert "0 (greedy)" in help_of and "0.01 to 10" in help_of, out.stdout


def test_a_mistyped_option_gets_each_suggestion_once():
    out = subprocess.run([sys.executable, "-m", "tui.cli", "train", "--stepp", "3", "--setp", "4"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().endswith("did you mean --step?"), out.stderr


class CountingSampler:
    """A real sampler whose recurrent steps are counted (rows per step)."""

    @staticmethod
    def wrap(sampler):
        steps = []
        advance = sampler._advance

        def counted(ids, state):
            steps.append(len(ids))
            return advance(ids, state)

        sampler._advance = counted
        return steps


@pytest.mark.trains
def test_a_long_seed_is_primed_once_for_every_sample_drawn_from_it(trained_run):
    from engine.run.follow import open_run

    saved = open_run(trained_run)
    seed = "".join(saved.vocab[i % len(saved.vocab)] for i in range(500))
    window, every = saved.sampler.reading
    steps = CountingSampler.wrap(saved.sampler)
    rounds = [saved.sampler.generate(seed, (0.5, 1.0), 10, seed=number) for number in range(4)]
    # read in the run's windows, a sample reads only the seed's last window, whatever its length
    reads = 10 // every
    assert steps.count(1) == 0 and steps.count(2) == 4 * (window + (10 - reads) + reads * window)
    again = open_run(trained_run).sampler
    assert [again.generate(seed, (0.5, 1.0), 10, seed=number) for number in range(4)] == rounds  # same text

    saved.sampler.reading = again.reading = None  # the state carried: the seed is read once
    steps = CountingSampler.wrap(saved.sampler)
    rounds = [saved.sampler.generate(seed, (0.5, 1.0), 10, seed=number) for number in range(4)]
    assert steps.count(1) == len(seed), "the seed was run through the model more than once"
    assert steps.count(2) == 4 * 10
    assert [again.generate(seed, (0.5, 1.0), 10, seed=number) for number in range(4)] == rounds  # same text
    assert np.allclose(saved.sampler.next_distribution(seed), again.next_distribution(seed))
