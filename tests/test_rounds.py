"""The rules of generation rounds (tui/rounds.py), without Textual or TensorFlow: which
sampler a round uses and when it starts, and where its seed text comes from."""

from __future__ import annotations

from engine.data.corpus import load_corpus
from tests.conftest import tiny_text
from tests.scripted import numpy_sampler
from tui.rounds import SEED_CHARS, Offer, Rounds

TEXT = tiny_text(2000, seed=5)


def test_a_sampler_starts_a_round_at_once_when_the_seed_text_is_known():
    rounds, sampler = Rounds(seed=1), numpy_sampler(TEXT)
    assert rounds.offer(Offer(sampler, "before training"), streaming=False) == "before training"
    assert rounds.sampler is sampler and rounds.pending is None


def test_a_new_model_waits_for_the_round_streaming_and_only_the_newest_waits():
    rounds = Rounds(seed=1)
    first, second, third = (numpy_sampler(TEXT, seed=n) for n in range(3))
    rounds.offer(Offer(first, "before training"), streaming=False)
    assert rounds.offer(Offer(second, "after epoch 1"), streaming=True) is None
    assert rounds.offer(Offer(third, "after epoch 2"), streaming=True) is None
    assert rounds.round_finished() == "after epoch 2" and rounds.sampler is third
    assert rounds.round_finished() is None  # nothing waits any more


def test_the_users_round_replaces_the_one_streaming():
    rounds = Rounds(seed=1)
    rounds.offer(Offer(numpy_sampler(TEXT), "before training"), streaming=False)
    asked = Offer(numpy_sampler(TEXT, seed=1), "resampled", now=True)
    assert rounds.offer(asked, streaming=True) == "resampled"


def test_the_first_round_of_a_saved_run_waits_for_its_training_text():
    rounds, sampler = Rounds(seed=1), numpy_sampler(TEXT)
    rounds.reset(seed_corpus_known=False)
    assert rounds.offer(Offer(sampler, "from the saved model"), streaming=False) is None
    assert rounds.sampler is None  # (the keys that sample stay dimmed meanwhile)
    assert rounds.seed_corpus_found(None, streaming=False) == "from the saved model"
    assert rounds.sampler is sampler and rounds.seed_corpus_known


def test_a_round_streaming_when_the_text_is_found_drops_the_one_held():
    rounds = Rounds(seed=1)
    rounds.reset(seed_corpus_known=False)
    rounds.offer(Offer(numpy_sampler(TEXT), "from the saved model"), streaming=False)
    assert rounds.seed_corpus_found(None, streaming=True) is None and rounds.pending is None


def test_seed_texts_come_from_the_corpus_then_the_excerpts_then_the_model(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT, encoding="utf-8")
    corpus, sampler = load_corpus(path, lowercase=False), numpy_sampler(TEXT)
    rounds = Rounds(seed=3)
    rounds.offer(Offer(sampler, "start"), streaming=False)
    rounds.seed_corpus = corpus
    seed_text, _ = rounds.next_seed()
    assert len(seed_text) == SEED_CHARS and seed_text in TEXT
    rounds.seed_corpus, rounds.excerpts = None, ["not in the vocabulary: ¤", "Truth is a woman."]
    assert rounds.next_seed()[0] == "Truth is a woman."  # (the one the model can read)
    rounds.excerpts = []
    written = rounds.next_seed()[0]
    assert len(written) == SEED_CHARS and written[0].isalpha() and set(written) <= set(sampler.vocab)


def test_a_pinned_seed_text_holds_until_unpinned_and_a_new_run_unpins_it():
    rounds = Rounds(seed=3)
    rounds.offer(Offer(numpy_sampler(TEXT), "start"), streaming=False)
    rounds.pin("the will to")
    assert [rounds.next_seed()[0] for _ in range(2)] == ["the will to"] * 2
    rounds.pin(None)
    assert rounds.next_seed()[0] != "the will to"
    rounds.pin("the will to")
    rounds.reset(seed_corpus_known=True)
    assert rounds.pinned_seed is None and rounds.sampler is None


def test_the_same_seed_gives_the_same_rounds():
    def seeds(seed):
        rounds = Rounds(seed=seed)
        rounds.offer(Offer(numpy_sampler(TEXT), "start"), streaming=False)
        return [rounds.next_seed() for _ in range(3)]

    assert seeds(11) == seeds(11) and seeds(11) != seeds(12)
