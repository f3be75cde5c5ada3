"""Where a line ends is learnable only from windows longer than a line: on a corpus whose
lines are all exactly 40 characters, a tiny model trained on 64-character windows
(--maxlen 64) breaks most of its sampled lines at 40 +/- 5; on the default 16-character
windows, from a zero state each, it never sees a whole line and cannot. The same model
trained with its state carried from batch to batch (--carry-start), in 64-character
batches, learns it too. (In batches shorter than a line, 24 or 32 characters, it did not
within these 400 steps: the state reaches back to the last line end, but the gradients
reach back only as far as the batch; README, "Structure".)"""

from __future__ import annotations

import numpy as np
import pytest

from engine.data.textshape import line_lengths
from tests.conftest import tiny_config

LINE = 40


def forty_character_lines(path, lines: int = 1200) -> None:
    """Lines of exactly LINE random characters of "abc ": nothing in a line but its
    length says where it ends."""
    rng = np.random.default_rng(0)
    rows = ("".join(rng.choice(list("abc "), size=LINE)) for _ in range(lines))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def share_of_lines_near_forty(tmp_path, maxlen: int, **settings) -> float:
    from engine.data.corpus import load_corpus
    from engine.run.training import Trainer

    forty_character_lines(tmp_path / "lines.txt")
    config = tiny_config(**{**dict(units=32, maxlen=maxlen, step=8, batch_size=64, lr=0.03, warmup_steps=20,
                                   epochs=1000, steps=400, sample_length=0, patience=0), **settings})
    trainer = Trainer(load_corpus(tmp_path / "lines.txt"), config, tmp_path / f"run-{maxlen}",
                      sample_each_epoch=False)
    assert trainer.run().reason == "steps"
    sampled = trainer.sampler().generate("abc\n", [1.0], 4000, seed=1)[1.0]
    lengths = line_lengths(sampled)[:-1]  # the last line is unfinished
    assert len(lengths) >= 20, f"only {len(lengths)} lines sampled"
    return float(np.mean(np.abs(lengths - LINE) <= 5))


@pytest.mark.trains
def test_windows_longer_than_a_line_learn_where_it_ends(tmp_path):
    assert share_of_lines_near_forty(tmp_path, maxlen=64) > 0.5


@pytest.mark.trains
def test_sixteen_character_windows_cannot(tmp_path):
    assert share_of_lines_near_forty(tmp_path, maxlen=16) < 0.35


@pytest.mark.trains
def test_the_state_carried_in_batches_longer_than_a_line_learns_it(tmp_path):
    # 64 rows of 64 characters a batch: as many characters as 64 windows of 64
    assert share_of_lines_near_forty(tmp_path, maxlen=16, batch_size=256, carry_start=0.0,
                                     carry_length=64) > 0.5
