"""What char-rnn, torch-rnn and nanoGPT users expect of the command line (issue 10):
case kept, settings and limits on resume, checkpoints to choose from, priming, and
forgiving options. Real processes on real run directories."""

import json
import shutil

import pytest

from tests.runs import TINY, charlm

MIXED = "ROMEO: Good morrow, Juliet.\nJULIET: Good morrow, Romeo; art thou well?\n" * 80


@pytest.fixture
def mixed_corpus(tmp_path):
    path = tmp_path / "plays.txt"
    path.write_text(MIXED, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lowercase_run(tmp_path_factory):
    """One short run trained lower-cased with a time budget, copied for each test."""
    folder = tmp_path_factory.mktemp("trained")
    corpus = folder / "plays.txt"
    corpus.write_text(MIXED, encoding="utf-8")
    run = folder / "run"
    out = charlm("train", "--corpus", corpus, "--run", run, *TINY, "--length", "0", "--lowercase",
                 "--steps", "2", "--time-budget", "600")
    assert out.returncode == 0, out.stderr
    return corpus, run


@pytest.fixture
def run_copy(lowercase_run, tmp_path):
    corpus, run = lowercase_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return corpus, copy


def dry_run(*args):
    out = charlm("train", *args, *TINY, "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    return out.stdout, json.loads(out.stdout.strip().splitlines()[-1])


# -- case ------------------------------------------------------------------------------------
def test_case_is_kept_by_default_and_the_header_says_which_it_is(mixed_corpus, tmp_path):
    stdout, summary = dry_run("--corpus", mixed_corpus, "--run", tmp_path / "a")
    assert "Case: kept as written" in stdout and summary["config"]["lowercase"] is False
    assert summary["vocab_size"] == len(set(MIXED))

    stdout, summary = dry_run("--corpus", mixed_corpus, "--run", tmp_path / "b", "--lowercase")
    assert "Case: lower-cased" in stdout and summary["vocab_size"] == len(set(MIXED.lower()))


def test_the_book_preset_stays_the_books_recipe_lower_cased(mixed_corpus, tmp_path):
    stdout, summary = dry_run("--corpus", mixed_corpus, "--run", tmp_path / "a", "--preset", "book")
    assert "Case: lower-cased" in stdout and summary["config"]["lowercase"] is True
    stdout, summary = dry_run("--corpus", mixed_corpus, "--run", tmp_path / "b", "--preset", "book",
                              "--keep-case")
    assert "Case: kept as written" in stdout and summary["config"]["lowercase"] is False


# -- resume --------------------------------------------------------------------------------------
@pytest.mark.trains
def test_a_resumed_run_keeps_its_own_case_and_says_which_settings_came_from_it(run_copy):
    corpus, run = run_copy
    stdout, summary = dry_run("--corpus", corpus, "--run", run)
    assert "Case: lower-cased" in stdout and summary["config"]["lowercase"] is True
    assert f"resuming {run} with its own settings: preset=fast" in stdout and "lowercase=True" in stdout


@pytest.mark.trains
def test_resuming_with_the_other_case_names_the_setting_and_never_advises_fresh(run_copy):
    corpus, run = run_copy
    model = (run / "model.keras").read_bytes()
    out = charlm("train", "--corpus", corpus, "--run", run, "--keep-case", "--steps", "1")
    assert out.returncode == 1
    error = out.stderr.strip().splitlines()
    assert error == [f"charlm-tui: error: {run} was trained on lower-cased text; resume it without "
                     "--keep-case (it keeps its own setting) or choose another --run"]
    assert (run / "model.keras").read_bytes() == model


@pytest.mark.trains
def test_stopping_limits_belong_to_one_session_not_to_the_run(run_copy):
    corpus, run = run_copy
    saved = json.loads((run / "config.json").read_text())["config"]
    assert saved["time_budget"] is None and saved["steps"] is None  # given, but not kept

    # A run written before this rule, with an old budget in it, is not stopped by it.
    old = json.loads((run / "config.json").read_text())
    old["config"].update(time_budget=0.001, steps=1)
    (run / "config.json").write_text(json.dumps(old))
    out = charlm("train", "--corpus", corpus, "--run", run, "--steps", "3", "--length", "0", "--json")
    assert out.returncode == 0, out.stderr
    finished = json.loads(out.stdout.strip().splitlines()[-1])
    assert (finished["reason"], finished["step"]) == ("steps", 5)


# -- options -------------------------------------------------------------------------------------
@pytest.mark.parametrize("given, seconds", [("90", 90.0), ("90s", 90.0), ("10m", 600.0), ("1h", 3600.0),
                                            ("1.5m", 90.0)])
def test_time_budget_accepts_seconds_minutes_and_hours(given, seconds, mixed_corpus, tmp_path):
    _, summary = dry_run("--corpus", mixed_corpus, "--run", tmp_path / "r", "--time-budget", given)
    assert summary["config"]["time_budget"] == seconds


def test_a_time_budget_that_is_not_a_time_is_one_clear_line(mixed_corpus, tmp_path):
    out = charlm("train", "--corpus", mixed_corpus, "--time-budget", "10x", "--dry-run")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == ("charlm-tui train: error: argument --time-budget: "
                                                   "not a time (seconds, or e.g. 90s, 10m, 1h): '10x'")


@pytest.mark.parametrize("args, suggestion", [
    (["train", "--tempratures", "0.5"], "did you mean --temperatures?"),
    (["sample", "--run", "x", "--seed_text", "a"], "did you mean --seed-text?"),
    (["--corpuss", "x"], "did you mean --corpus?"),
    (["trian", "--steps", "1"], "did you mean train?"),
])
def test_a_mistyped_option_or_command_suggests_the_closest(args, suggestion):
    out = charlm(*args)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].endswith(suggestion)


# -- priming and samples ------------------------------------------------------------------------
def test_seed_text_takes_backslash_escapes(run_copy):
    _, run = run_copy
    out = charlm("sample", "--run", run, "--seed-text", r"romeo:\n", "--length", "5", "--temperatures", "0",
                 "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["seed_text"] == "romeo:\n"


def test_seed_file_primes_like_nanogpts_start_file(run_copy, tmp_path):
    _, run = run_copy
    seed = tmp_path / "prompt.txt"
    seed.write_text("JULIET:\nGood morrow, ", encoding="utf-8")
    out = charlm("sample", "--run", run, "--seed-file", seed, "--length", "5", "--temperatures", "0",
                 "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["seed_text"] == "JULIET:\nGood morrow, "

    missing = charlm("sample", "--run", run, "--seed-file", tmp_path / "none.txt")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f"charlm-tui: error: cannot read --seed-file {tmp_path / 'none.txt'}: No such file or directory"]


@pytest.mark.trains
def test_num_samples_gives_independent_samples_per_temperature(run_copy):
    _, run = run_copy
    out = charlm("sample", "--run", run, "--length", "40", "--temperatures", "1.0,1.2", "--num-samples", "3",
                 "--seed", "5", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for temperature in ("1.0", "1.2"):
        texts = result["samples"][temperature]
        assert len(texts) == 3 and len(set(texts)) == 3 and all(len(text) == 40 for text in texts)
        assert len(result["memorization"][temperature]) == 3  # the training text is on this machine
    again = json.loads(charlm("sample", "--run", run, "--length", "40", "--temperatures", "1.0,1.2",
                              "--num-samples", "3", "--seed", "5", "--json").stdout)
    assert again["samples"] == result["samples"]  # reproducible with --seed

    text = charlm("sample", "--run", run, "--length", "10", "--temperatures", "1.0", "--num-samples", "2")
    assert "temperature: 1.0 (sample 2 of 2)" in text.stdout


# -- the app ------------------------------------------------------------------------------------
@pytest.mark.slow
async def test_after_quitting_the_app_one_line_says_what_was_saved_and_how_to_resume(
        tiny_corpus_path, tmp_path):
    from tests.app_fixtures import app_options, running_app, wait_until
    from tui.app import build_app, saved_line

    run_dir = tmp_path / "my run"
    app = build_app(app_options(tiny_corpus_path, run_dir))
    async with running_app(app) as pilot:
        await wait_until(pilot, lambda: app.phase == "training" and app.training_pane.progress.step >= 2,
                         what="training steps")
        await pilot.press("q")
        await wait_until(pilot, lambda: app.return_code is not None or not app.is_running, what="exit")
    finished = app.main.session.finished
    assert saved_line(app) == (
        f"charlm-tui: saved {run_dir} at step {finished.step:,}"
        + (f", held-out loss {finished.val_loss:.4f}" if finished.val_loss is not None else "")
        + f"; resume with: charlm-tui --corpus {tiny_corpus_path} --run '{run_dir}'")


def test_quitting_the_app_before_training_began_says_nothing_new_was_saved(tiny_corpus_path, tmp_path):
    """q while the run is prepared (at start, or just after r or c): a line says so, rather
    than nothing at all after the user saw "training"."""
    from types import SimpleNamespace

    from engine.run.session import RunRequest, RunSession
    from tui.app import saved_line

    session = RunSession(RunRequest(corpus=str(tiny_corpus_path), run_dir=tmp_path / "run"))
    session.stop()
    assert session.run() is None
    app = SimpleNamespace(main=SimpleNamespace(session=session))  # what saved_line reads of the app
    assert saved_line(app) == ("charlm-tui: stopped before training began; nothing new was saved in "
                               f"{tmp_path / 'run'}")
    session.error = "the corpus is empty"  # a failure says its own line instead
    assert saved_line(app) is None


@pytest.mark.trains
def test_fresh_keeps_the_previous_run_whole_in_a_sibling_folder_and_says_where(run_copy):
    corpus, run = run_copy
    before = {name: (run / name).read_bytes() for name in ("model.keras", "config.json", "metrics.jsonl")}
    out = charlm("train", "--corpus", corpus, "--run", run, *TINY, "--fresh", "--steps", "1", "--length", "0",
                 "--json")
    assert out.returncode == 0, out.stderr
    [aside] = run.parent.glob("run.prev-*")
    assert f"the previous run in {run} was moved, whole, to {aside}" in " ".join(out.stdout.split())
    assert {name: (aside / name).read_bytes() for name in before} == before
    assert json.loads(out.stdout.strip().splitlines()[-1])["step"] == 1  # a new run in RUN
    assert not (aside / ".lock").exists()
    resumed = charlm("sample", "--run", aside, "--length", "5", "--temperatures", "0")
    assert resumed.returncode == 0, resumed.stderr  # the old run is a whole run


# -- checkpoints to choose from -------------------------------------------------------------------
@pytest.mark.trains
def test_the_best_held_out_checkpoint_is_kept_and_can_be_sampled(mixed_corpus, tmp_path):
    run = tmp_path / "run"
    out = charlm("train", "--corpus", mixed_corpus, "--run", run, *TINY, "--epochs", "2", "--length", "0")
    assert out.returncode == 0, out.stderr
    losses = [row["val_loss"] for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
              if row.get("kind") == "epoch"]
    assert len(losses) == 2 and (run / "model.best.keras").is_file()
    assert json.loads((run / "state.json").read_text())["best_val_loss"] == pytest.approx(min(losses))

    for choice in ("best", "latest", run / "model.best.keras"):
        sampled = charlm("sample", "--run", run, "--checkpoint", choice, "--length", "5",
                         "--temperatures", "0")
        assert sampled.returncode == 0, sampled.stderr

    (tmp_path / "bogus.keras").write_bytes(b"not a zip")
    (tmp_path / "link.keras").symlink_to(run / "model.best.keras")
    for bad, why in ((tmp_path / "bogus.keras", "cannot use the checkpoint"),
                     (tmp_path / "link.keras", "it is not a regular file")):
        refused = charlm("sample", "--run", run, "--checkpoint", bad, "--length", "5")
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 1 and len(lines) == 1 and why in lines[0], refused.stderr
