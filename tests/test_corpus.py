"""engine.data.corpus and engine.data.pydocs: real files in tmp_path, real decoding, no mocks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.data import pydocs, textfiles
from engine.data.corpus import MAX_VOCAB, Corpus, default_corpora_dir, load_corpus, named_corpora
from engine.errors import CorpusError

SHARED_NIETZSCHE = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "nietzsche.txt"
needs_nietzsche = pytest.mark.skipif(not SHARED_NIETZSCHE.is_file(),
                                     reason=f"{SHARED_NIETZSCHE} is not here")


@pytest.fixture(scope="module")
def pydocs_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("xdg-cache")


@pytest.fixture(autouse=True)
def isolated_caches(monkeypatch, pydocs_cache, tmp_path):
    """Keep the tests off the real ~/.cache and ~/.keras; pydocs is built once per module."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(pydocs_cache))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.delenv("CHARLM_CORPORA", raising=False)


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def book_text(path: Path) -> str:
    """What the book's `open(path).read().lower()` gives (BOM aside)."""
    return path.read_text(encoding="utf-8-sig").lower()


# --- the book's corpus -----------------------------------------------------------------


@needs_nietzsche
def test_nietzsche_file_gives_the_book_counts():
    corpus = load_corpus(SHARED_NIETZSCHE, lowercase=True)
    assert len(corpus) == 600_894
    assert len(corpus.vocab) == 57
    assert corpus.ids.dtype == np.uint8
    assert corpus.text() == book_text(SHARED_NIETZSCHE)
    assert list(corpus.vocab) == sorted(set(book_text(SHARED_NIETZSCHE)))
    assert corpus.name == "nietzsche" and corpus.source == str(SHARED_NIETZSCHE)


@needs_nietzsche
def test_nietzsche_named_corpus_comes_from_the_keras_cache(tmp_path, monkeypatch):
    keras_home = tmp_path / "keras"
    (keras_home / "datasets").mkdir(parents=True)
    shutil.copy(SHARED_NIETZSCHE, keras_home / "datasets" / "nietzsche.txt")
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    notices = []
    corpus = load_corpus("nietzsche", lowercase=True, corpora_dir=tmp_path / "none", on_notice=notices.append)
    assert notices == []
    assert corpus.name == "nietzsche"
    assert (len(corpus), len(corpus.vocab)) == (600_894, 57)
    assert corpus.source == str(keras_home / "datasets" / "nietzsche.txt")


@pytest.mark.trains
def test_offline_nietzsche_falls_back_to_pydocs_quickly(tmp_path, monkeypatch):
    from engine.data import corpus as corpus_module
    from engine.data.pydocs import pydocs_path
    from engine.tfsetup import keras

    keras(), pydocs_path()  # importing TensorFlow and building pydocs are not what is measured
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras-home"))
    notices = []
    started = time.monotonic()
    corpus = load_corpus("nietzsche", corpora_dir=tmp_path / "none", on_notice=notices.append)
    # a guard against a hang (a stalled download is abandoned after DOWNLOAD_TIMEOUT), not a benchmark
    assert time.monotonic() - started < corpus_module.DOWNLOAD_TIMEOUT + 20
    if notices:  # offline, as the test machines are
        assert corpus.name == "pydocs"
        assert len(notices) == 1
        assert "could not download the Nietzsche corpus" in notices[0]
        assert "pydocs" in notices[0]
        assert not list((tmp_path / "empty-keras-home").rglob("nietzsche.txt"))
    else:  # a machine that is online really downloads it
        assert corpus.name == "nietzsche" and len(corpus) > 500_000


# --- reading like Python's text mode ----------------------------------------------------


def test_small_file_is_read_like_the_book(tmp_path):
    path = write(tmp_path / "mixed.txt", "Hello, World!\nÉté à Zürich — naïve café.\n")
    corpus = load_corpus(path, lowercase=True)
    assert corpus.text() == book_text(path)
    assert list(corpus.vocab) == sorted(set(book_text(path)))
    assert corpus.ids.dtype == np.uint8
    assert len(corpus) == len(book_text(path))
    assert corpus.lowercase and corpus.name == "mixed"


def test_lowercase_off_keeps_case(tmp_path):
    path = write(tmp_path / "case.txt", "Hello World")
    corpus = load_corpus(path, lowercase=False)
    assert corpus.text() == "Hello World"
    assert "H" in corpus.vocab and not corpus.lowercase


def test_case_is_kept_by_default_as_on_the_command_line(tmp_path):
    from engine.config import TrainConfig

    corpus = load_corpus(write(tmp_path / "case.txt", "Hello World"))
    assert corpus.text() == "Hello World" and corpus.lowercase is TrainConfig().lowercase is False


def test_universal_newlines_and_bom(tmp_path):
    path = write(tmp_path / "newlines.txt", b"\xef\xbb\xbfone\r\ntwo\rthree\nfour\r")
    assert load_corpus(path).text() == "one\ntwo\nthree\nfour\n"


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 7, 64])
def test_reading_in_chunks_gives_the_same_text(tmp_path, monkeypatch, chunk_bytes):
    # Multibyte characters (2, 3 and 4 bytes), \r\n pairs and Greek capital sigma (whose
    # lower case depends on the next letter) land on every chunk boundary.
    text = "ΟΔΟΣ café\r\n€uro 𝄞 ΣΊΣΥΦΟΣ\r\n\rdone ΑΣ" * 7
    path = write(tmp_path / "chunks.txt", text)
    expected = load_corpus(path, lowercase=True)
    monkeypatch.setattr(textfiles, "CHUNK_BYTES", chunk_bytes)
    progress = []
    chunked = load_corpus(path, lowercase=True,
                          on_progress=lambda done, total: progress.append((done, total)))
    assert chunked.text() == expected.text() == book_text(path)
    assert chunked.vocab == expected.vocab
    assert np.array_equal(chunked.ids, expected.ids)
    assert progress[-1][0] == progress[-1][1]
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)


def test_cjk_text_uses_uint16_ids(tmp_path):
    text = "".join(chr(code) for code in range(0x4E00, 0x4E00 + 3000)) + "。\n"
    corpus = load_corpus(write(tmp_path / "cjk.txt", text * 2))
    assert len(corpus.vocab) == 3002
    assert corpus.ids.dtype == np.uint16
    assert corpus.text() == text * 2
    assert corpus.nbytes == 2 * len(corpus)


def test_encode_decode_round_trip(tmp_path):
    path = write(tmp_path / "abc.txt", "the quick brown fox jumps over the lazy dog.\n")
    corpus = load_corpus(path, lowercase=True)
    ids = corpus.encode("The Lazy Fox.")
    assert ids.dtype == corpus.ids.dtype
    assert corpus.decode(ids) == "the lazy fox."
    assert corpus.decode(corpus.ids) == corpus.text()
    assert corpus.text(4, 9) == "quick"
    assert list(corpus.vocab) == sorted(corpus.vocab)


def test_encode_names_unknown_characters(tmp_path):
    corpus = load_corpus(write(tmp_path / "abc.txt", "abc abc"))
    with pytest.raises(CorpusError, match=r"vocabulary.*'z'.*'é'"):
        corpus.encode("abzé")


def test_random_text_is_a_slice(tmp_path):
    corpus = load_corpus(write(tmp_path / "words.txt", "lorem ipsum dolor sit amet " * 20))
    rng = np.random.default_rng(0)
    for _ in range(20):
        seed = corpus.random_text(30, rng)
        assert len(seed) == 30 and seed in corpus.text()
    assert corpus.random_text(10_000, rng) == corpus.text()


def test_folder_concatenates_txt_files_in_order(tmp_path):
    folder = tmp_path / "books"
    folder.mkdir()
    write(folder / "b.txt", "second\n")
    write(folder / "a.txt", "First")
    write(folder / "c.txt", "")
    write(folder / "notes.md", "ignored")
    corpus = load_corpus(folder)
    assert corpus.text() == "First\nsecond\n"
    assert corpus.name == "books"


def test_named_corpus_from_corpora_dir(tmp_path):
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    write(corpora / "shakespeare.txt", "To be, or not to be")
    names = named_corpora(corpora)
    assert list(names)[:2] == ["nietzsche", "pydocs"]
    assert "shakespeare" in names
    corpus = load_corpus("shakespeare", corpora_dir=corpora)
    assert corpus.name == "shakespeare" and corpus.text() == "To be, or not to be"


def test_default_corpora_dir_respects_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARLM_CORPORA", str(tmp_path))
    assert default_corpora_dir() == tmp_path
    monkeypatch.delenv("CHARLM_CORPORA")
    monkeypatch.chdir(tmp_path)
    assert default_corpora_dir().name == "corpora"


def test_explicit_encodings(tmp_path):
    latin = write(tmp_path / "latin.txt", "Café olé".encode("latin-1"))
    assert load_corpus(latin, encoding="latin-1").text() == "Café olé"
    wide = write(tmp_path / "wide.txt", "Hello wide world".encode("utf-16"))
    assert load_corpus(wide, encoding="utf-16").text() == "Hello wide world"


# --- refusals: one clear sentence each ---------------------------------------------------


def refusal(spec, **kwargs) -> str:
    with pytest.raises(CorpusError) as caught:
        load_corpus(spec, **kwargs)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_missing_path_lists_named_corpora(tmp_path):
    message = refusal(tmp_path / "nope.txt", corpora_dir=tmp_path)
    assert "no such file, folder or named corpus" in message
    assert "nietzsche" in message and "pydocs" in message


def test_folder_without_text(tmp_path):
    (tmp_path / "nothing").mkdir()
    assert "no .txt files" in refusal(tmp_path / "nothing")
    (tmp_path / "empties").mkdir()
    write(tmp_path / "empties" / "a.txt", "")
    write(tmp_path / "empties" / "b.txt", b"\xef\xbb\xbf")
    assert "empty" in refusal(tmp_path / "empties")


def test_empty_and_one_character_files(tmp_path):
    assert "empty" in refusal(write(tmp_path / "empty.txt", ""))
    assert "needs at least 2 distinct characters" in refusal(write(tmp_path / "a.txt", "a"))
    assert "needs at least 2 distinct characters" in refusal(write(tmp_path / "aA.txt", "aAaA"),
                                                             lowercase=True)


@pytest.mark.parametrize("magic, format_name", [
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\x7fELF\x02\x01\x01", "ELF"),
    (b"PK\x03\x04", "ZIP"),
    (b"%PDF-1.7\n", "PDF"),
    (b"\x1f\x8b\x08", "gzip"),
    (b"\xff\xd8\xff\xe0", "JPEG"),
    (b"GIF89a", "GIF"),
])
def test_binary_formats_are_named(tmp_path, magic, format_name):
    path = write(tmp_path / "x.png", magic + b"some more bytes\x00\x01\x02")
    message = refusal(path)
    assert "looks like binary data" in message and format_name in message
    assert "x.png" in message


def test_nul_bytes_are_binary(tmp_path):
    assert "binary data" in refusal(write(tmp_path / "nul.txt", b"abc\x00\x01\xffdef" * 3))


@pytest.mark.parametrize("data", [
    "Hello, world!\n".encode("utf-16"),        # with a BOM
    "Hello, world!\n".encode("utf-16-le"),     # without one: a NUL in every other byte
    "Hello, world!\n".encode("utf-16-be"),
])
def test_utf16_says_how_to_convert(tmp_path, data):
    message = refusal(write(tmp_path / "wide.txt", data))
    assert "appears to be UTF-16 text" in message
    assert "iconv -f UTF-16 -t UTF-8" in message and "--encoding utf-16" in message


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_bom_names_the_encodings_that_read_it(tmp_path, codec):
    """The advice above ("--encoding utf-16"), followed for a file without a byte-order
    mark, must end in a refusal that says what to pass instead, not in a traceback."""
    path = write(tmp_path / "wide.txt", "Hello, world!\n".encode(codec))
    message = refusal(path, encoding="utf-16")
    assert "cannot be decoded as utf-16" in message and "--encoding utf-16-le or utf-16-be" in message
    assert load_corpus(path, encoding=codec).text() == "Hello, world!\n"


@pytest.mark.parametrize("codec", ["utf-32", "utf-32-le"])
def test_utf32_says_how_to_convert(tmp_path, codec):
    message = refusal(write(tmp_path / "wider.txt", "Hello, world!\n".encode(codec)))
    assert "UTF-32" in message and "iconv" in message


def test_latin1_reports_byte_and_offset(tmp_path):
    path = write(tmp_path / "latin.txt", "Le café est chaud.\n".encode("latin-1"))
    message = refusal(path)
    assert "is not valid UTF-8: byte 0xE9 at offset 6" in message
    assert "Latin-1" in message and "--encoding latin-1" in message


@pytest.mark.parametrize("chunk_bytes", [1, 3, 4, 1 << 20])
def test_invalid_byte_offset_is_absolute_across_chunks(tmp_path, monkeypatch, chunk_bytes):
    monkeypatch.setattr(textfiles, "CHUNK_BYTES", chunk_bytes)
    data = "abc é ".encode("utf-8") * 3 + b"\xff" + b" tail"
    bad_offset = data.index(b"\xff")
    message = refusal(write(tmp_path / "bad.txt", data))
    assert f"byte 0xFF at offset {bad_offset}" in message


def test_truncated_character_at_the_end(tmp_path):
    assert "byte 0xC3 at offset 3" in refusal(write(tmp_path / "cut.txt", b"abc\xc3"))


def test_too_many_distinct_characters(tmp_path):
    text = "".join(chr(code) for code in range(0x4E00, 0x4E00 + MAX_VOCAB + 5))
    message = refusal(write(tmp_path / "huge.txt", text))
    assert f"has {MAX_VOCAB + 5:,} distinct characters; the limit is {MAX_VOCAB:,}" in message


def test_unknown_encoding(tmp_path):
    path = write(tmp_path / "ok.txt", "hello")
    assert "unknown encoding: klingon-8" in refusal(path, encoding="klingon-8")
    for codec in ("base64", "rot13", "hex", "zlib_codec"):  # bytes to bytes, or str to str
        assert f"{codec} is not a text encoding" in refusal(path, encoding=codec)
    assert "undefined cannot decode any text" in refusal(path, encoding="undefined")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root reads files whatever their permissions")
def test_permission_denied(tmp_path):
    path = write(tmp_path / "secret.txt", "hidden text")
    path.chmod(0)
    try:
        assert "permission denied" in refusal(path)
    finally:
        path.chmod(0o600)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(
    st.binary(max_size=400),
    st.text(max_size=200).map(lambda text: text.encode("utf-8")),
    st.text(max_size=100).map(lambda text: text.encode("utf-16-le")),
))
def test_any_bytes_give_a_corpus_or_a_corpus_error(tmp_path, data):
    path = write(tmp_path / "random.txt", data)
    try:
        corpus = load_corpus(path)
    except CorpusError as error:
        assert str(error)
    else:
        assert isinstance(corpus, Corpus) and len(corpus) > 0 and len(corpus.vocab) >= 2
        assert corpus.decode(corpus.ids) == corpus.text()


# --- pydocs --------------------------------------------------------------------------------


@pytest.mark.trains
def test_pydocs_is_a_large_prose_corpus(pydocs_cache):
    path = pydocs.pydocs_path()
    assert path.parent == pydocs_cache / "charlm-tui"
    assert path.name == f"pydocs-{sys.version_info.major}.{sys.version_info.minor}.txt"
    text = path.read_text(encoding="utf-8")
    assert len(text) > 500_000
    letters = sum(char.isalpha() or char.isspace() for char in text)
    assert letters / len(text) > 0.8
    assert text.count(" the ") > 2_000
    assert not [name for name in os.listdir(path.parent) if name.startswith(".")]  # no temp files
    assert pydocs.pydocs_path() == path  # the cache is used from then on

    corpus = load_corpus("pydocs", corpora_dir=pydocs_cache / "none")
    assert corpus.name == "pydocs" and corpus.source == pydocs.DESCRIPTION
    assert len(corpus) == len(text) and corpus.ids.dtype == np.uint8


def test_engine_corpus_imports_no_keras_or_ui():
    code = ("import sys, engine.data.corpus, engine.data.pydocs; "
            "print(sorted(name for name in ('keras', 'tensorflow', 'textual', 'rich') "
            "if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], check=True)
    assert result.stdout.strip() == "[]"


def test_a_corpora_file_replaces_a_built_in_name(tmp_path):
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    write(corpora / "nietzsche.txt", "Supposing that truth is a woman")
    notices = []
    corpus = load_corpus("nietzsche", corpora_dir=corpora, on_notice=notices.append)
    assert corpus.text() == "Supposing that truth is a woman" and notices == []
    assert named_corpora(corpora)["nietzsche"] == str(corpora / "nietzsche.txt")
