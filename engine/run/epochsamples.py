"""The samples a run writes after each epoch (samples/epoch-NNNN.txt), with how much of
each is copied from the training text."""

from __future__ import annotations

import threading

import numpy as np

from engine.config import TrainConfig
from engine.errors import CorpusError
from engine.modeling.novelty import index_for

SEED_LENGTH = 60  # the book's 60 chars whatever the window: the stateful sampler reads any length


def sample_round(sampler, corpus, config: TrainConfig, epoch: int,
                 stop: threading.Event) -> tuple[str, dict[float, str]] | None:
    """(seed text, {temperature: sample}) for the end of `epoch`, reproducible from the
    run's seed; None once a stop is asked: the user is waiting for the checkpoint, not for
    samples (a long --length must not hold a stop up)."""
    rng = np.random.default_rng([config.seed, epoch])
    seed_text = corpus.random_text(SEED_LENGTH, rng)
    temperatures = config.temperatures
    columns: list[list[str]] = [[] for _ in temperatures]
    stream = sampler.stream(seed_text, temperatures, config.sample_length, seed=int(rng.integers(2**31)))
    for number, (chars, _) in enumerate(stream):
        if number % 64 == 0 and stop.is_set():
            return None
        for column, char in zip(columns, chars):
            column.append(char)
    return seed_text, {float(t): "".join(column) for t, column in zip(temperatures, columns)}


def samples_file(corpus, seed_text: str, samples: dict[float, str]) -> str:
    """The text of samples/epoch-NNNN.txt."""
    return f"--- seed: {seed_text}\n" + "".join(
        f"\n--- temperature {t}\n{seed_text}{sample}\n{copied_line(corpus, sample)}\n"
        for t, sample in samples.items())


def copied_line(corpus, sample: str) -> str:
    """How much of a sample is copied from the training text (engine/modeling/novelty.py); its
    index is built at the first call, on the training thread, once per corpus."""
    try:
        measured = index_for(corpus).measure(sample).describe()
    except CorpusError as error:  # a corpus too big to index: say so, in every file
        measured = f"n/a ({error})"
    return f"--- copied from the training text: {measured}"
