"""The training loop with a real (tiny) Keras model: events, checkpoints, resume, stop."""

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from engine import events
from engine.errors import CorpusError, RunDirError, TrainingError
from engine.files import checkpoints
from engine.files.rundir import RunDir
from engine.run.training import Trainer
from tests.conftest import tiny_config

pytestmark = pytest.mark.trains  # trains a tiny model or loads one with Keras: `make test-fast` leaves it out


def train(corpus, run_dir, fresh=False, **overrides):
    received = []
    finished = Trainer(corpus, tiny_config(**overrides), run_dir, on_event=received.append, fresh=fresh).run()
    return finished, received


def of(kind, received):
    return [e for e in received if isinstance(e, kind)]


def test_a_run_reports_events_and_writes_a_complete_run_directory(tiny_corpus, tmp_path):
    finished, received = train(tiny_corpus, tmp_path / "run", epochs=2)
    started = of(events.TrainingStarted, received)[0]
    assert started.vocab_size == len(tiny_corpus.vocab) and started.resumed_from_step == 0
    vocab_size = started.vocab_size
    assert started.parameters == 4 * (8 * (vocab_size + 8) + 8) + 8 * vocab_size + vocab_size
    assert [e.epoch for e in of(events.EpochEnd, received)] == [1, 2]
    assert all(e.val_loss > 0 for e in of(events.EpochEnd, received))
    assert of(events.BatchProgress, received)[-1].step == finished.step == 2 * started.steps_per_epoch
    assert [len(s.samples) for s in of(events.SamplesGenerated, received)] == [4, 4]
    assert finished.reason == "epochs" and type(received[-1]) is events.TrainingFinished

    run = RunDir(tmp_path / "run")
    assert run.load_vocab() == tiny_corpus.vocab
    assert run.load_config().units == 8
    rows = run.read_metrics()
    assert {"epoch", "step", "wall", "chars", "train_loss", "val_loss"} <= set(rows[0])
    assert [r["step"] for r in rows if r["kind"] == "epoch"] == [started.steps_per_epoch, finished.step]
    assert (tmp_path / "run" / "samples" / "epoch-0002.txt").read_text().count("temperature") == 4


def test_the_model_file_loads_with_plain_keras_in_safe_mode(tiny_corpus, tmp_path):
    train(tiny_corpus, tmp_path / "run", steps=2)
    code = ("import sys, keras; m = keras.saving.load_model(sys.argv[1], safe_mode=True); "
            "assert not any(n.split('.')[0] in ('engine', 'tui') for n in sys.modules); "
            "print(m.count_params())")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run" / "model.keras")],
                         capture_output=True, text=True, timeout=120, cwd="/")
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) > 0


def test_the_book_preset_has_the_books_parameter_count(tmp_path):
    from engine.config import preset
    from engine.modeling.model import build_model

    assert build_model(57, preset("book")).count_params() == 102_585


def test_resume_continues_from_the_saved_step_with_the_optimizer_state(tiny_corpus, tmp_path):
    first, _ = train(tiny_corpus, tmp_path / "run", steps=3, epochs=5)
    saved = checkpoints.load_model(RunDir(tmp_path / "run"))
    moments = [v.numpy().copy() for v in saved.optimizer.variables if v.shape.rank]  # Adam's m and v
    assert first.step == 3 and any(np.abs(m).sum() > 0 for m in moments)

    second, received = train(tiny_corpus, tmp_path / "run", steps=2, epochs=5)
    assert of(events.TrainingStarted, received)[0].resumed_from_step == 3
    assert second.step == 5
    resumed = checkpoints.load_model(RunDir(tmp_path / "run"))
    assert int(resumed.optimizer.iterations.numpy()) == 5
    steps = [r["step"] for r in RunDir(tmp_path / "run").read_metrics()]
    assert steps == sorted(steps)  # nothing logged twice


def test_fresh_starts_over(tiny_corpus, tmp_path):
    train(tiny_corpus, tmp_path / "run", steps=3)
    _, received = train(tiny_corpus, tmp_path / "run", fresh=True, steps=1)
    assert of(events.TrainingStarted, received)[0].resumed_from_step == 0
    assert max(r["step"] for r in RunDir(tmp_path / "run").read_metrics()) <= 1


def test_stop_from_another_thread_ends_within_one_batch_with_a_checkpoint(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr("engine.run.callback.PROGRESS_INTERVAL", 0.0)  # an event per batch
    progress = []
    trainer = Trainer(tiny_corpus, tiny_config(epochs=1000, log_every=1), tmp_path / "run",
                      on_event=lambda e: progress.append(e))
    worker = threading.Thread(target=trainer.run)
    worker.start()
    while not of(events.BatchProgress, progress):
        time.sleep(0.05)
    trainer.stop()
    stopped_at = of(events.BatchProgress, progress)[-1].step
    worker.join(60)
    finished = of(events.TrainingFinished, progress)[0]
    assert not worker.is_alive() and finished.reason == "stopped"
    assert finished.step <= stopped_at + 1
    assert int(checkpoints.load_model(RunDir(tmp_path / "run")).optimizer.iterations.numpy()) == finished.step


def test_pause_holds_training_between_batches(tiny_corpus, tmp_path):
    progress = []
    trainer = Trainer(tiny_corpus, tiny_config(epochs=1000), tmp_path / "run", on_event=progress.append)
    worker = threading.Thread(target=trainer.run)
    worker.start()
    while not of(events.BatchProgress, progress):
        time.sleep(0.05)
    trainer.pause()
    time.sleep(0.5)
    held = len(progress)
    time.sleep(1.0)
    assert trainer.paused and len(progress) == held
    trainer.resume()
    time.sleep(0.5)
    trainer.stop()
    worker.join(60)
    assert len(progress) > held


def test_time_budget_and_step_limits(tiny_corpus, tmp_path):
    finished, _ = train(tiny_corpus, tmp_path / "a", steps=4, epochs=1000)
    assert (finished.reason, finished.step) == ("steps", 4)
    started = time.monotonic()
    finished, _ = train(tiny_corpus, tmp_path / "b", time_budget=2.0, epochs=100_000)
    assert finished.reason == "time_budget" and time.monotonic() - started < 30


def test_book_objective_trains_and_learns(tiny_corpus, tmp_path):
    finished, received = train(tiny_corpus, tmp_path / "run", preset="book", maxlen=16, step=3,
                               units=16, epochs=2)
    losses = [e.val_loss for e in of(events.EpochEnd, received)]
    assert losses[1] < losses[0] < np.log(len(tiny_corpus.vocab)) + 0.1


def test_a_second_process_on_the_same_run_directory_is_refused_with_its_pid(tiny_corpus, tmp_path):
    holder = Trainer(tiny_corpus, tiny_config(), tmp_path / "run")
    try:
        code = ("import sys; from engine.files.rundir import RunDir\n"
                "try: RunDir(sys.argv[1]).acquire()\nexcept Exception as e: print(e)")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True,
                             text=True, timeout=60)
        assert "in use" in out.stdout and str(__import__("os").getpid()) in out.stdout
    finally:
        holder.close()
    RunDir(tmp_path / "run").acquire()  # released: free again


def test_a_checkpoint_of_another_vocabulary_is_refused_and_left_alone(tiny_corpus, tmp_path):
    from engine.data.corpus import load_corpus

    train(tiny_corpus, tmp_path / "run", steps=1)
    model_bytes = (tmp_path / "run" / "model.keras").read_bytes()
    other_path = tmp_path / "other.txt"
    other_path.write_text("completely different: 0123456789 xyz!? " * 200)
    with pytest.raises(RunDirError, match="different vocabulary"):
        Trainer(load_corpus(other_path, lowercase=True), tiny_config(), tmp_path / "run")
    with pytest.raises(RunDirError, match="units"):
        Trainer(tiny_corpus, tiny_config(units=9), tmp_path / "run")
    assert (tmp_path / "run" / "model.keras").read_bytes() == model_bytes


def test_too_short_a_corpus_is_refused_clearly(tmp_path):
    from engine.data.corpus import load_corpus

    path = tmp_path / "short.txt"
    path.write_text("just a few words here\n")
    with pytest.raises(CorpusError, match="too short"):
        Trainer(load_corpus(path, lowercase=True), tiny_config(), tmp_path / "run")


def test_nan_loss_stops_rolls_back_and_suggests_a_lower_learning_rate(tiny_corpus, tmp_path):
    train(tiny_corpus, tmp_path / "run", steps=2, epochs=5)
    run = RunDir(tmp_path / "run")
    # poison the weights so the next batch's loss is NaN
    model = checkpoints.load_model(run)
    weights = model.get_weights()
    weights[-1][:] = np.nan
    model.set_weights(weights)
    model.save(run.model_path)
    poisoned = run.model_path.read_bytes()
    with pytest.raises(TrainingError, match=r"loss became nan at step 3.*rolled back.*step 2.*--lr"):
        train(tiny_corpus, tmp_path / "run", steps=2, epochs=5)
    assert run.model_path.read_bytes() == poisoned  # nothing from the failed steps was saved


def test_sampler_snapshot_during_training_matches_the_model(tiny_corpus, tmp_path):
    trainer = Trainer(tiny_corpus, tiny_config(steps=2), tmp_path / "run", sample_each_epoch=False)
    trainer.run()
    sampler = trainer.sampler()
    prefix = tiny_corpus.text(0, 20)
    ids = np.array([tiny_corpus.encode(prefix)], dtype="int32")
    expected = trainer.model.predict(ids, verbose=0)[0][-1]
    np.testing.assert_allclose(sampler.next_distribution(prefix), expected, atol=2e-6)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["corpus"]["excerpts"]


def _summaries(folder):
    """{tag: [steps]} from the TensorBoard event files in `folder`, read with TensorFlow."""
    from engine.tfsetup import tensorflow

    tf, found = tensorflow(), {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                found.setdefault(value.tag, []).append(event.step)
    return found


def test_tensorboard_logs_hold_train_and_heldout_loss_throughput_and_samples(tiny_corpus, tmp_path):
    logs = tmp_path / "tb"
    finished = Trainer(tiny_corpus, tiny_config(epochs=2, log_every=5), tmp_path / "run",
                       tensorboard_dir=logs).run()
    train, validation = _summaries(logs / "train"), _summaries(logs / "validation")
    assert {"batch_loss", "chars_per_sec", "train_loss", "samples/temperature_0.2"} <= set(train)
    per_epoch = finished.step // 2
    # Optimizer steps on every curve: once per epoch, and about every 5 steps across both
    # epochs (Keras's callback would restart its count with each epoch's fit call).
    assert train["train_loss"] == validation["heldout_loss"] == [per_epoch, 2 * per_epoch]
    steps = train["batch_loss"]
    assert steps == sorted(steps) and steps[-1] > per_epoch
    assert all(b - a >= 5 for a, b in zip(steps, steps[1:]))


def test_heldout_loss_tells_a_model_built_under_a_strategy_from_one_that_is_not(tiny_corpus):
    """Found with public tf.distribute calls (it read the model's private _distribute_strategy);
    either way of predicting gives the same loss."""
    from engine.data.windows import Windows
    from engine.modeling.model import build_model, heldout_loss, under_a_strategy
    from engine.tfsetup import tensorflow

    tf = tensorflow()
    config = tiny_config()
    plain = build_model(len(tiny_corpus.vocab), config)
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        mirrored = build_model(len(tiny_corpus.vocab), config)
    mirrored.set_weights(plain.get_weights())
    assert not under_a_strategy(plain)
    assert under_a_strategy(mirrored)
    windows = Windows(tiny_corpus.ids[:2000], config.maxlen, config.step, config.objective,
                      config.batch_size, shuffle=False)
    assert heldout_loss(mirrored, windows) == pytest.approx(heldout_loss(plain, windows), rel=1e-5)


def test_mirrored_strategy_splits_batches_over_two_devices_and_checkpoints_once(tiny_corpus_path, tmp_path):
    """Two logical CPUs stand in for two GPUs; the run must train, save and resume."""
    import os

    env = {**os.environ, "CHARLM_LOGICAL_CPUS": "2"}
    command = [sys.executable, "-m", "tui.cli", "train", "--corpus", str(tiny_corpus_path), "--run",
               str(tmp_path / "run"), "--units", "8", "--maxlen", "16", "--step", "8", "--batch-size", "16",
               "--steps", "3", "--length", "20", "--strategy", "mirrored", "--mixed-precision", "--json"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert first.returncode == 0, first.stderr
    assert "needs a GPU" in first.stdout + first.stderr  # mixed precision is refused on CPUs, with a note
    code = ("import engine.tfsetup as s, sys; s.keras(); from engine.scale.distribute import make_strategy; "
            "print(make_strategy('mirrored').num_replicas_in_sync)")
    replicas = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              env=env)
    assert replicas.stdout.strip() == "2"
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])["step"] == 6
    assert RunDir(tmp_path / "run").load_config().strategy == "mirrored"


def test_each_epochs_sample_file_says_how_much_of_each_sample_is_copied(tiny_corpus, tmp_path):
    from engine.modeling.novelty import index_for

    _, received = train(tiny_corpus, tmp_path / "run", epochs=1, sample_length=120)
    round_ = of(events.SamplesGenerated, received)[0]
    text = (tmp_path / "run" / "samples" / "epoch-0001.txt").read_text()
    for temperature, sample in round_.samples.items():
        block = (f"--- temperature {temperature}\n{round_.seed_text}{sample}\n"
                 "--- copied from the training text: ")
        assert block + index_for(tiny_corpus).measure(sample).describe() + "\n" in text
    assert text.count("--- copied from the training text: ") == len(round_.samples) == 4


def test_a_corpus_too_big_for_the_memorization_check_says_so_in_the_sample_file(tiny_corpus, tmp_path,
                                                                                monkeypatch):
    from engine.modeling import novelty

    monkeypatch.setattr(novelty, "MAX_CORPUS_CHARS", 1000)
    train(tiny_corpus, tmp_path / "run", epochs=1)
    text = (tmp_path / "run" / "samples" / "epoch-0001.txt").read_text()
    assert text.count("--- copied from the training text: n/a (tiny has 6,000 characters, more than the "
                      "memorization check handles (1,000); its samples are not checked for copied "
                      "text)\n") == 4


def test_the_held_out_scoring_gives_up_when_asked_to_stop(tiny_corpus, tmp_path):
    from engine.modeling.model import heldout_loss

    trainer = Trainer(tiny_corpus, tiny_config(steps=2), tmp_path / "run")
    trainer.run()
    stop = threading.Event()
    assert heldout_loss(trainer.model, trainer.val_windows, stop=stop) is not None
    stop.set()
    assert heldout_loss(trainer.model, trainer.val_windows, stop=stop) is None


def test_keep_every_keeps_epoch_checkpoints_within_keep_max(tiny_corpus, tmp_path):
    from tui.cli import main

    run = tmp_path / "run"
    trainer = Trainer(tiny_corpus, tiny_config(epochs=3, keep_every=1, keep_max=2), run,
                      sample_each_epoch=False)
    assert trainer.run().reason == "epochs"
    kept = sorted(p.name for p in run.glob("model.epoch-*"))
    assert kept == ["model.epoch-0002.keras", "model.epoch-0002.sampler.npz",
                    "model.epoch-0003.keras", "model.epoch-0003.sampler.npz"], kept
    assert (run / "model.epoch-0003.keras").stat().st_ino == (run / "model.keras").stat().st_ino  # a link
    assert main(["sample", "--run", str(run), "--checkpoint", str(run / "model.epoch-0002.keras"),
                 "--length", "10", "--seed", "1"]) == 0


def test_stacked_lstms_train_under_xla_on_a_cpu_and_save_the_same_model(tiny_corpus, tmp_path):
    from engine.modeling.model import build_model, use_xla_for_stacked_lstms
    from engine.tfsetup import tensorflow

    if tensorflow().config.list_physical_devices("GPU"):
        pytest.skip("with a GPU, Keras chooses XLA itself")
    one_layer = build_model(len(tiny_corpus.vocab), tiny_config())
    use_xla_for_stacked_lstms(one_layer, tiny_config())
    assert one_layer.jit_compile is False  # one layer: the compile would cost more than it saves
    two = Trainer(tiny_corpus, tiny_config(steps=2, layers=2), tmp_path / "two", sample_each_epoch=False)
    assert two.run().step == 2
    assert two.model.jit_compile is True
    saved = checkpoints.load_model(RunDir(tmp_path / "two"))  # vetted as the network charlm-tui builds
    assert saved.get_compile_config()["jit_compile"] == one_layer.get_compile_config()["jit_compile"]
