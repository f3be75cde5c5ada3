"""A memorization check: how much of a generated sample is copied from the training text.

torch-rnn users check generated text for novel substrings with a separate tool; this
one runs live, on every sample. For a sample it reports two figures (`Novelty`):

    share    the fraction of the sample's 20-character substrings ("20-grams") that
             occur verbatim somewhere in the training text;
    longest  the length of the longest substring of the sample that occurs verbatim in
             the training text, when that is 20 characters or more (0 otherwise), up
             to LONGEST_CAP.

The index (`NoveltyIndex`) holds, for every 20-gram of the training text, its start
position, the positions sorted by a 64-bit hash of the 20 characters. The hashes
themselves are not kept: a lookup recomputes a candidate's hash from the text, so the
index costs 4 bytes a character (plus 1/4 byte for a directory of every 32nd hash),
about 425 MB for a 100 MB corpus; building it needs 12 bytes a character for a moment
(bench/novelty_index.py measures both, and the time). Every hit is checked against the
text itself, so a hash collision can never count a 20-gram as copied: it only costs a
comparison. Corpora over MAX_CORPUS_CHARS are refused (CorpusError) rather than made
slow; callers show "n/a" instead.

`index_for(corpus)` builds an index once per Corpus object and shares it (the trainer
and the app then hold one copy): the first call takes a while for a big corpus (about
10 s for 100 MB on 2 cores), so a UI calls it on a worker thread, and
`built_index(corpus)` answers at once with the index or None. `NoveltyIndex.measure(text)`
is a pure function of immutable arrays, safe to call from any thread, about 1-3 ms for
400 characters. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.errors import CorpusError

NGRAM = 20                      # a copied run counts from this many characters
LONGEST_CAP = 400               # the longest run is measured up to this length ("400+")
MAX_CORPUS_CHARS = 200_000_000  # 2.4 GB while building, 850 MB kept: beyond this, "n/a"

_DIRECTORY_STRIDE = 32          # one hash kept for every 32 positions: 5 bisection steps left
_BUILD_CHUNK = 1 << 20          # windows hashed at a time while building (8 MB temporaries)
_OCCURRENCES_CAP = 128          # occurrences of one 20-gram followed when extending a run


def _odd_constants(count: int) -> np.ndarray:
    """Fixed odd 64-bit multipliers with well-mixed bits (the splitmix64 sequence)."""
    values, state = [], 0
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) % 2**64
        value = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
        value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) % 2**64
        values.append((value ^ (value >> 31)) | 1)
    return np.array(values, dtype=np.uint64)


# A 20-gram's hash: its bytes read as 8-byte words (and a last 4-byte one), each times its
# own multiplier, summed mod 2**64, then mixed. 10 words cover 20 ids of up to 4 bytes.
_WORD_KEYS = _odd_constants(10)


@dataclass(frozen=True)
class Novelty:
    """How much of one sample is copied from the training text."""

    share: float | None  # fraction of its 20-grams found verbatim; None: shorter than 20 chars
    longest: int         # longest copied run, >= NGRAM (capped at LONGEST_CAP), or 0 if none
    windows: int         # how many 20-grams the sample has

    def describe(self) -> str:
        """One line for people: '12.5% of its 20-char substrings; longest copied run 34 chars'."""
        if self.share is None:
            return f"n/a (shorter than {NGRAM} characters)"
        if not self.longest:
            return f"{self.share:.1%} of its {NGRAM}-char substrings; no copied run of {NGRAM}+ chars"
        run = f"{LONGEST_CAP}+" if self.longest >= LONGEST_CAP else str(self.longest)
        return f"{self.share:.1%} of its {NGRAM}-char substrings; longest copied run {run} chars"

    def as_json(self) -> dict:
        share = None if self.share is None else round(self.share, 4)
        return {"copied_20gram_share": share, "longest_copied": self.longest}


class NoveltyIndex:
    """Every 20-gram of a text, for `measure`. Build with `build` or `index_for`."""

    def __init__(self, ids: np.ndarray, vocab: Sequence[str], positions: np.ndarray,
                 directory: np.ndarray, shift: int):
        self._ids = ids                # the text, one id per character (shared, not copied)
        self._grams = _sliding(ids)    # a view: row i is the 20-gram at position i
        self._positions = positions    # uint32 start of every 20-gram, in hash order
        self._directory = directory    # the hash (>> shift) at every _DIRECTORY_STRIDE-th position
        self._shift = shift            # low hash bits dropped (they held positions while sorting)
        codes = np.array([ord(char) for char in vocab], dtype=np.int64)
        self._code_order = np.argsort(codes)
        self._sorted_codes = codes[self._code_order]
        for array in (positions, directory, self._code_order, self._sorted_codes):
            array.flags.writeable = False  # shared between threads: nothing may change them

    @property
    def nbytes(self) -> int:
        """Memory the index adds to the text's own ids."""
        return self._positions.nbytes + self._directory.nbytes

    # -- building ------------------------------------------------------------------------
    @classmethod
    def build(cls, ids: np.ndarray, vocab: Sequence[str], name: str = "the corpus") -> "NoveltyIndex":
        """Index the 20-grams of `ids` (one id per character into `vocab`); raises
        CorpusError for a text over MAX_CORPUS_CHARS."""
        if len(ids) > MAX_CORPUS_CHARS:
            raise CorpusError(
                f"{name} has {len(ids):,} characters, more than the memorization check handles "
                f"({MAX_CORPUS_CHARS:,}); its samples are not checked for copied text")
        ids = np.ascontiguousarray(ids)
        if ids.dtype.kind != "u" or ids.itemsize > 4:  # hashing reads each id's bytes
            ids = ids.astype(np.uint32)
        count = max(0, len(ids) - NGRAM + 1)
        # While sorting, each key is the hash with its low bits replaced by the position:
        # one uint64 array sorted in place, with no argsort index beside it.
        shift = max(1, (count - 1).bit_length())
        keys = np.empty(count, dtype=np.uint64)
        for start in range(0, count, _BUILD_CHUNK):
            stop = min(start + _BUILD_CHUNK, count)
            chunk = _hash_rows(_byte_windows(ids)[start:stop])
            chunk >>= np.uint64(shift)
            chunk <<= np.uint64(shift)
            chunk |= np.arange(start, stop, dtype=np.uint64)
            keys[start:stop] = chunk
        keys.sort()
        directory = keys[::_DIRECTORY_STRIDE] >> np.uint64(shift)
        positions = np.empty(count, dtype=np.uint32)
        low_bits = np.uint64((1 << shift) - 1)
        for start in range(0, count, _BUILD_CHUNK):
            positions[start:start + _BUILD_CHUNK] = keys[start:start + _BUILD_CHUNK] & low_bits
        del keys
        return cls(ids, vocab, positions, directory, shift)

    # -- measuring -------------------------------------------------------------------------
    def measure(self, text: str) -> Novelty:
        """The share of `text`'s 20-grams found in the training text, and its longest
        copied run. Characters outside the vocabulary are never found."""
        encoded = self._encode(text)
        windows = len(encoded) - NGRAM + 1
        if windows <= 0:
            return Novelty(share=None, longest=0, windows=0)
        known = _windows_without_unknowns(encoded)
        # From here on, an unknown character reads as id 0: no window holding one has any
        # rows to match, and a copied run never reaches one (its windows all matched).
        sample = np.maximum(encoded, 0).astype(self._ids.dtype)
        prefixes = self._prefixes(_byte_windows(sample))
        first, after = self._ranges(prefixes)
        after = np.where(known, after, first)  # a window with an unknown character: no rows
        found = self._verified(sample, first, after)
        longest = _longest_run(self, sample, found, first, after)
        return Novelty(share=float(found.mean()), longest=longest, windows=windows)

    def _encode(self, text: str) -> np.ndarray:
        """Ids into the vocabulary, -1 for a character it does not have."""
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)
        if not len(self._sorted_codes):
            return np.full(len(codes), -1, dtype=np.int64)
        slots = np.minimum(np.searchsorted(self._sorted_codes, codes), len(self._sorted_codes) - 1)
        known = self._sorted_codes[slots] == codes
        return np.where(known, self._code_order[slots], -1)

    def _prefixes(self, grams_bytes: np.ndarray) -> np.ndarray:
        """The sorting hash (its high bits) of each 20-gram, given as a row of its bytes."""
        return _hash_rows(grams_bytes) >> np.uint64(self._shift)

    def _prefix_at(self, rows: np.ndarray) -> np.ndarray:
        """The sorting hash of the 20-grams at these rows of the index."""
        grams = self._grams[self._positions[rows]]  # a copy, one 20-gram a row
        return self._prefixes(grams.view(np.uint8).reshape(len(grams), -1))

    def _ranges(self, prefixes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each prefix, the rows [first, after) of the index with that hash: both
        ends of np.searchsorted over hashes recomputed from the text. The directory
        narrows each search to _DIRECTORY_STRIDE rows; bisection does the rest, for both
        ends of every range at once."""
        count, queries = len(self._positions), len(prefixes)
        if not count:
            return np.zeros(queries, dtype=np.int64), np.zeros(queries, dtype=np.int64)
        wanted = np.concatenate([prefixes, prefixes])
        inclusive = np.repeat([False, True], queries)  # the upper ends: first row with a greater hash
        block = np.concatenate([np.searchsorted(self._directory, prefixes, side="left"),
                                np.searchsorted(self._directory, prefixes, side="right")]).astype(np.int64)
        low = np.where(block > 0, (block - 1) * _DIRECTORY_STRIDE + 1, 0)
        high = np.minimum(block * _DIRECTORY_STRIDE, count)
        while True:
            active = np.flatnonzero(low < high)
            if not len(active):
                return low[:queries], low[queries:]
            middle = (low[active] + high[active]) // 2
            at_middle = self._prefix_at(middle)
            goes_right = np.where(inclusive[active], at_middle <= wanted[active], at_middle < wanted[active])
            low[active] = np.where(goes_right, middle + 1, low[active])
            high[active] = np.where(goes_right, high[active], middle)

    def _matches(self, sample: np.ndarray, window: int, rows: np.ndarray) -> np.ndarray:
        """The text positions among these rows whose 20 characters are the sample's at `window`."""
        starts = self._positions[rows].astype(np.int64)  # room for the arithmetic of _extend
        equal = (self._grams[starts] == sample[window:window + NGRAM]).all(axis=1)
        return starts[equal]

    def _verified(self, sample: np.ndarray, first: np.ndarray, after: np.ndarray) -> np.ndarray:
        """Which windows occur in the text: the first candidate of equal hash is checked
        (the answer unless two 20-grams share a hash), the rest only when it differs."""
        windows = len(first)
        found = np.zeros(windows, dtype=bool)
        candidates = np.flatnonzero(after > first)
        if not len(candidates):
            return found
        starts = self._positions[first[candidates]]
        found[candidates] = (self._grams[starts] == _sliding(sample)[candidates]).all(axis=1)
        for window in candidates[~found[candidates] & (after[candidates] - first[candidates] > 1)]:
            for row in range(first[window] + 1, after[window], _BUILD_CHUNK):  # a hash collision: rare
                rows = np.arange(row, min(row + _BUILD_CHUNK, after[window]))
                if len(self._matches(sample, window, rows)):
                    found[window] = True
                    break
        return found


def _byte_windows(ids: np.ndarray) -> np.ndarray:
    """Row i is the bytes of ids[i:i + NGRAM] (a view of the contiguous `ids`: no copy)."""
    raw = ids.view(np.uint8)
    width = NGRAM * ids.itemsize
    if len(raw) < width:
        return np.empty((0, width), dtype=np.uint8)
    return np.lib.stride_tricks.sliding_window_view(raw, width)[::ids.itemsize]


def _hash_rows(grams_bytes: np.ndarray) -> np.ndarray:
    """The 64-bit hash of each row of bytes (NGRAM ids: 20, 40 or 80 bytes): its 8-byte
    words (the last one of 4 bytes for one-byte ids), each times its own odd multiplier,
    summed mod 2**64 (unsigned arithmetic wraps), then mixed."""
    hashes = np.zeros(len(grams_bytes), dtype=np.uint64)
    for word, offset in enumerate(range(0, grams_bytes.shape[1], 8)):
        piece = grams_bytes[:, offset:offset + 8]  # each row's bytes are contiguous: a view
        values = piece.view(np.uint64 if piece.shape[1] == 8 else np.uint32)[:, 0]
        hashes += values * _WORD_KEYS[word]
    return _mixed(hashes)


def _mixed(hashes: np.ndarray) -> np.ndarray:
    """MurmurHash3's finaliser, in place: a one-to-one mix that spreads every bit into the
    high bits the index sorts by (in the plain sum, a byte's low bits reach only some of
    them)."""
    for multiplier in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
        hashes ^= hashes >> np.uint64(33)
        hashes *= np.uint64(multiplier)
    hashes ^= hashes >> np.uint64(33)
    return hashes


def _sliding(ids: np.ndarray) -> np.ndarray:
    """Row i is ids[i:i + NGRAM] (a view: nothing is copied; too short a text has no rows)."""
    if len(ids) < NGRAM:
        return np.empty((0, NGRAM), dtype=ids.dtype)
    return np.lib.stride_tricks.sliding_window_view(ids, NGRAM)


def _windows_without_unknowns(sample: np.ndarray) -> np.ndarray:
    """For each 20-gram of the sample: whether all its characters are in the vocabulary."""
    unknown_before = np.concatenate(([0], np.cumsum(sample < 0)))
    return unknown_before[NGRAM:] - unknown_before[:-NGRAM] == 0


# -- the longest copied run ----------------------------------------------------------------------
def _longest_run(index: NoveltyIndex, sample: np.ndarray, found: np.ndarray, first: np.ndarray,
                 after: np.ndarray) -> int:
    """The longest substring of the sample that occurs in the text (>= NGRAM, else 0).

    Every 20-gram of a copied run is found, so a run lies within a segment of
    consecutive found windows; but consecutive found windows may come from different
    places of the text, so a segment only bounds the run. Each segment is settled by
    anchors: for a window's occurrences in the text, the match is extended left and right
    (never past the segment). That accounts for every run through the anchor, so the
    rest lie wholly left or wholly right of it: two smaller segments, skipped once they
    could not beat the best run so far. Anchors are taken near the middle, among windows
    with at most _OCCURRENCES_CAP occurrences, so the answer is exact unless every
    20-gram of a run occurs more often than that (then it is a lower bound).
    """
    counts = after - first
    segments = _true_runs(found)
    best = 0
    while segments and best < LONGEST_CAP:
        low, high = segments.pop()  # windows low..high inclusive
        if high - low + NGRAM <= best:
            continue
        anchor = _pick_anchor(counts, low, high)
        rows = np.arange(first[anchor], min(after[anchor], first[anchor] + _OCCURRENCES_CAP))
        starts = index._matches(sample, anchor, rows)
        best = max(best, _extend(index._ids, sample, anchor, starts, low, high))
        if anchor > low:
            segments.append((low, anchor - 1))
        if anchor < high:
            segments.append((anchor + 1, high))
    return min(best, LONGEST_CAP)


def _true_runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) of each maximal stretch of True."""
    edges = np.diff(np.concatenate(([0], flags.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist()))


def _pick_anchor(counts: np.ndarray, low: int, high: int) -> int:
    """The window nearest the segment's middle whose occurrences can all be followed
    (balanced halves), else the rarest one."""
    span = counts[low:high + 1]
    followable = np.flatnonzero(span <= _OCCURRENCES_CAP)
    if not len(followable):
        return low + int(np.argmin(span))
    middle = (high - low) / 2
    return low + int(followable[np.argmin(np.abs(followable - middle))])


def _extend(text: np.ndarray, sample: np.ndarray, anchor: int, starts: np.ndarray, low: int,
            high: int) -> int:
    """The longest match through the sample's window `anchor` at any of these text
    positions, extended at most to the segment low..high (windows) and LONGEST_CAP."""
    if not len(starts):
        return 0
    right_room = min(high - anchor, LONGEST_CAP)   # characters after the window, in the segment
    left_room = min(anchor - low, LONGEST_CAP)
    right = _common_length(text, starts + NGRAM, sample[anchor + NGRAM:anchor + NGRAM + right_room], +1)
    left = _common_length(text, starts - 1, sample[anchor - left_room:anchor][::-1], -1)
    return int((left + NGRAM + right).max())


def _common_length(text: np.ndarray, starts: np.ndarray, wanted: np.ndarray, direction: int) -> np.ndarray:
    """For each start: how many of `wanted` the text matches reading from it in `direction`."""
    if not len(wanted):
        return np.zeros(len(starts), dtype=np.int64)
    places = starts[:, None] + direction * np.arange(len(wanted))
    inside = (places >= 0) & (places < len(text))
    equal = inside & (text[np.clip(places, 0, len(text) - 1)] == wanted)
    # The first mismatch in each row (a False column appended: a full match has its length).
    return np.argmin(np.concatenate([equal, np.zeros((len(starts), 1), dtype=bool)], axis=1), axis=1)


# -- one index per corpus ---------------------------------------------------------------------
# Keyed by the Corpus object (compared by identity), dropped with it.
_indexes: "weakref.WeakKeyDictionary[object, NoveltyIndex]" = weakref.WeakKeyDictionary()
_build_locks: "weakref.WeakKeyDictionary[object, threading.Lock]" = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()  # guards the two dictionaries; never held during a build


def index_for(corpus) -> NoveltyIndex:
    """The index of an engine.data.corpus.Corpus, built at the first call and shared after.
    Any thread: a second caller for the same corpus waits for the first one's build,
    callers for other corpora do not. Raises CorpusError for a corpus too big to index
    (at once: the size is checked first)."""
    index = built_index(corpus)
    if index is not None:
        return index
    with _registry_lock:
        build_lock = _build_locks.setdefault(corpus, threading.Lock())
    with build_lock:
        index = built_index(corpus)
        if index is None:
            index = NoveltyIndex.build(corpus.ids, corpus.vocab, name=corpus.name)
            with _registry_lock:
                _indexes[corpus] = index
    return index


def built_index(corpus) -> NoveltyIndex | None:
    """The corpus's index if it is built already, else None; never waits for a build."""
    with _registry_lock:
        return _indexes.get(corpus)
