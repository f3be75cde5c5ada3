"""The memorization check (engine/modeling/novelty.py) against real corpora and a brute-force count."""

import threading

import numpy as np
import pytest

from engine.data.corpus import load_corpus
from engine.errors import CorpusError
from engine.modeling import novelty
from engine.modeling.novelty import LONGEST_CAP, NGRAM, Novelty, NoveltyIndex, index_for
from tests.conftest import tiny_text


def brute_force(text: str, sample: str) -> Novelty:
    """What measure() must say, by plain substring search."""
    windows = len(sample) - NGRAM + 1
    if windows <= 0:
        return Novelty(share=None, longest=0, windows=0)
    found = sum(sample[i:i + NGRAM] in text for i in range(windows))
    longest = 0
    for start in range(windows):
        length = longest + 1  # only a longer run matters; runs are nested, so extend upwards
        while (start + length <= len(sample) and length <= LONGEST_CAP
               and sample[start:start + length] in text):
            length += 1
        longest = max(longest, length - 1)
    longest = min(longest, LONGEST_CAP) if longest >= NGRAM else 0
    return Novelty(share=found / windows, longest=longest, windows=windows)


def index_of(text: str, dtype=np.uint8) -> NoveltyIndex:
    vocab = sorted(set(text))
    ids = np.array([vocab.index(char) for char in text], dtype=dtype)
    return NoveltyIndex.build(ids, vocab)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("novelty") / "corpus.txt"
    path.write_text(tiny_text(60_000, seed=1), encoding="utf-8")
    return load_corpus(path, lowercase=True)


def test_a_sample_copied_from_the_text_is_all_copied(corpus):
    index = index_for(corpus)
    for start, length in ((0, 300), (12_345, 20), (len(corpus) - 77, 77)):
        measured = index.measure(corpus.text(start, start + length))
        assert measured == Novelty(share=1.0, longest=length, windows=length - NGRAM + 1)
    longer = index.measure(corpus.text(100, 100 + 3 * LONGEST_CAP))
    assert (longer.share, longer.longest) == (1.0, LONGEST_CAP)  # the cap: "400+"
    assert "100.0% of its 20-char substrings; longest copied run 400+ chars" in longer.describe()


def test_a_random_sample_is_novel(corpus):
    rng = np.random.default_rng(5)
    shuffled = "".join(rng.permutation(list(corpus.text(0, 400))))
    measured = index_for(corpus).measure(shuffled)
    assert measured.share == 0.0 and measured.longest == 0 and measured.windows == 381
    assert measured.describe() == "0.0% of its 20-char substrings; no copied run of 20+ chars"


def test_a_sample_shorter_than_twenty_characters_has_no_share(corpus):
    index = index_for(corpus)
    assert index.measure(corpus.text(0, NGRAM - 1)) == Novelty(share=None, longest=0, windows=0)
    assert index.measure("") == Novelty(share=None, longest=0, windows=0)
    assert index.measure(corpus.text(0, NGRAM)) == Novelty(share=1.0, longest=NGRAM, windows=1)
    assert index.measure("x").describe() == "n/a (shorter than 20 characters)"
    assert index.measure("x").as_json() == {"copied_20gram_share": None, "longest_copied": 0}


def test_characters_outside_the_vocabulary_are_never_copied(corpus):
    index = index_for(corpus)
    passage = corpus.text(5000, 5100)
    assert "€" not in corpus.vocab and "Z" not in corpus.vocab  # the tiny corpus is lower case
    broken = passage[:60] + "€" + passage[61:]
    measured = index.measure(broken)
    assert measured.longest == 60  # the copied part before the foreign character
    assert measured.windows == 81 and measured.share == pytest.approx((81 - 20) / 81)
    assert measured.describe() == "75.3% of its 20-char substrings; longest copied run 60 chars"
    assert index.measure(passage.upper()).share == 0.0
    assert index.measure("€" * 50) == Novelty(share=0.0, longest=0, windows=31)
    assert index.measure(passage + "\ud800").longest == 100  # a lone surrogate is just unknown


@pytest.mark.parametrize("seed", range(4))
def test_agrees_with_brute_force_on_a_repetitive_random_text(seed):
    """Few distinct pieces, so 20-grams recur at many places and a sample's found
    windows chain across places (runs shorter than their chain of found windows)."""
    rng = np.random.default_rng(seed)
    pieces = ["".join(rng.choice(list("ab c"), size=rng.integers(3, 12))) for _ in range(12)]
    text = "".join(rng.choice(pieces, size=900))
    index = index_of(text)
    for length in (19, 20, 45, 400, 700):
        sample = "".join(rng.choice(pieces, size=length))[:length]
        assert index.measure(sample) == brute_force(text, sample), (seed, length)
        copied_start = int(rng.integers(0, len(text) - length))
        copied = text[copied_start:copied_start + length // 2] + sample[length // 2:]
        assert index.measure(copied) == brute_force(text, copied), (seed, length)


@pytest.mark.parametrize("dtype", [np.uint16, np.int64])
def test_agrees_with_brute_force_whatever_the_width_of_the_ids(dtype):
    """Ids of 2 bytes (a corpus of more than 256 characters) and plain int64 ids (hashed
    as 4 bytes) give the same answers as one-byte ids."""
    rng = np.random.default_rng(11)
    alphabet = [chr(0x4E00 + i) for i in range(300)] + list("ab ")
    pieces = ["".join(rng.choice(alphabet[-3:] + alphabet[:2], size=rng.integers(3, 12))) for _ in range(12)]
    text = "".join(rng.choice(pieces, size=600)) + "".join(alphabet)
    index = index_of(text, dtype)
    for length in (20, 60, 400):
        sample = "".join(rng.choice(pieces, size=length))[:length]
        assert index.measure(sample) == brute_force(text, sample)
        start = int(rng.integers(0, len(text) - length))
        assert index.measure(text[start:start + length]) == Novelty(1.0, length, length - NGRAM + 1)


def test_hash_collisions_cost_time_never_a_wrong_answer(monkeypatch):
    """A hash that is the same for every 20-gram: every lookup finds every 20-gram of the
    text, and the figures must still be exact, because every hit is checked against it."""
    monkeypatch.setattr(novelty, "_WORD_KEYS", np.zeros(10, dtype=np.uint64))
    rng = np.random.default_rng(9)
    text = "".join(rng.choice(list("abc"), size=140))
    index = index_of(text)
    for start in range(0, 120, 7):
        sample = text[start:start + 30] + "".join(rng.choice(list("abc"), size=30))
        assert index.measure(sample) == brute_force(text, sample)


def test_a_text_shorter_than_one_window_finds_nothing():
    index = index_of("short text")
    assert index.measure("short text and some more words") == Novelty(share=0.0, longest=0, windows=11)


def test_one_index_per_corpus_shared_between_threads(tiny_corpus):
    from engine.modeling.novelty import built_index

    assert built_index(tiny_corpus) is None  # never waits, never builds
    corpus, results = tiny_corpus, []
    threads = [threading.Thread(target=lambda: results.append(index_for(corpus))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and all(result is index_for(corpus) for result in results)
    assert built_index(corpus) is results[0]


def test_a_corpus_too_big_is_refused_in_one_sentence(corpus, monkeypatch):
    monkeypatch.setattr(novelty, "MAX_CORPUS_CHARS", 1000)
    with pytest.raises(CorpusError) as refused:
        NoveltyIndex.build(corpus.ids, corpus.vocab, name=corpus.name)
    message = str(refused.value)
    assert message == (f"{corpus.name} has 60,000 characters, more than the memorization check handles "
                       "(1,000); its samples are not checked for copied text")
