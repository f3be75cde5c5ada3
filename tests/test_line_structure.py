"""Where a line ends is learnable only from windows longer than a line: on a corpus whose
lines are all exactly 40 characters, a tiny model trained on 64-character windows
(--maxlen 64) breaks most of its sampled lines at 40 +/- 5; on the default 16-character
windows, from a zero state each, it never sees a whole line and cannot."""

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


def share_of_lines_near_forty(tmp_path, maxlen: int) -> float:
    from engine.data.corpus import load_corpus
    from engine.run.training import Trainer

    forty_character_lines(tmp_path / "lines.txt")
    config = tiny_config(units=32, maxlen=maxlen, step=8, batch_size=64, lr=0.03, warmup_steps=20,
                         epochs=1000, steps=400, sample_length=0, patience=0)
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
