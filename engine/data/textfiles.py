"""Text files read as Python's text mode reads them, a chunk at a time.

Binary files are recognised (and named, where their first bytes tell the format),
UTF-16 and UTF-32 without a byte-order mark are caught before they are misread, and a
decoding error says where it is and what to try. Memory does not depend on a file's
size: each file is decoded CHUNK_BYTES at a time, lower-cased as it goes when asked.
"""

from __future__ import annotations

import codecs
import io
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import CorpusError

CHUNK_BYTES = 2 * 1024 * 1024   # bytes decoded at a time: ~25x that in temporaries (tests make it tiny)
SNIFF_BYTES = 64 * 1024     # bytes looked at to recognise binary files and UTF-16/32
_LONGEST_WORD = 1000        # characters carried from one chunk to the next (see _lowercased)


def strerror(error: OSError) -> str:
    return (error.strerror or str(error)).lower()

# The first bytes of common binary formats, so the refusal can name the format.
_MAGIC_NUMBERS = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\x7fELF", "an ELF executable"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"PK\x05\x06", "a ZIP archive"),
    (b"%PDF-", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
)
# UTF-32 first: its little-endian BOM starts with the UTF-16 one.
_UNICODE_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


@dataclass(frozen=True)
class Source:
    path: Path
    codec: codecs.CodecInfo
    start: int      # the first byte to decode (after a UTF-8 byte-order mark)
    size: int


def codec(encoding: str | None) -> codecs.CodecInfo:
    try:
        codec = codecs.lookup(encoding or "utf-8")
    except LookupError:
        raise CorpusError(f"unknown encoding: {encoding}") from None
    # Codecs such as base64, zlib or rot13 do not turn bytes into text: str.encode and
    # bytes.decode accept only text encodings, and say so with a LookupError.
    try:
        "".encode(codec.name)
    except LookupError:
        raise CorpusError(f"{encoding} is not a text encoding") from None
    except UnicodeError:  # the "undefined" codec refuses everything
        raise CorpusError(f"{encoding} cannot decode any text") from None
    return codec


def inspect(path: Path, codec: codecs.CodecInfo, explicit: bool) -> Source:
    """Check the start of a file, before any decoding, for what is plainly not UTF-8 text."""
    try:
        with open(path, "rb") as file:
            head = file.read(SNIFF_BYTES)
            size = os.fstat(file.fileno()).st_size
    except OSError as error:
        raise CorpusError(f"cannot read {path}: {strerror(error)}") from None
    for magic, format_name in _MAGIC_NUMBERS:
        if head.startswith(magic):
            raise CorpusError(f"{path} looks like binary data ({format_name}), not text")
    start = 0
    if codec.name == "utf-8" and head.startswith(codecs.BOM_UTF8):
        start = len(codecs.BOM_UTF8)  # the BOM says "UTF-8"; it is not part of the text
    elif not explicit:
        wide = _wide_unicode(head)
        if wide:
            raise CorpusError(
                f"{path} appears to be {wide} text; convert it with "
                f"`iconv -f {wide} -t UTF-8 {path} > out.txt` or pass --encoding {wide.lower()}")
        if b"\0" in head:
            raise CorpusError(f"{path} looks like binary data (it contains NUL bytes), not text")
    return Source(path=path, codec=codec, start=start, size=size)


def _wide_unicode(head: bytes) -> str | None:
    """'UTF-16' or 'UTF-32' if the bytes look like it (a BOM, or NULs in a regular pattern
    as mostly-ASCII text gives), else None."""
    for bom, name in _UNICODE_BOMS:
        if head.startswith(bom):
            return name
    sample = np.frombuffer(head[: len(head) // 4 * 4], dtype=np.uint8)
    if len(sample) < 8:
        return None
    # The fraction of NUL bytes at each position modulo 4.
    zero = [float((sample[position::4] == 0).mean()) for position in range(4)]
    # Western text in UTF-32 has NUL high bytes always, and a non-NUL low byte.
    if (zero[2] == zero[3] == 1 and zero[0] == 0) or (zero[0] == zero[1] == 1 and zero[3] == 0):
        return "UTF-32"
    # In UTF-16 a NUL in every other byte (many of them), and none in the bytes between.
    even, odd = (zero[0] + zero[2]) / 2, (zero[1] + zero[3]) / 2
    if (odd > 0.5 and even == 0) or (even > 0.5 and odd == 0):
        return "UTF-16"
    return None


def text_chunks(inputs: list[Source], lowercase: bool, progress: Progress) -> Iterator[str]:
    """The corpus text, a chunk at a time: files joined with "\\n", newlines made "\\n"."""
    chunks = _joined(_decoded_chunks(item, progress) for item in inputs)
    return _lowercased(chunks) if lowercase else chunks


def _joined(files: Iterable[Iterator[str]]) -> Iterator[str]:
    """Chain the files' chunks with one "\\n" between files that have text."""
    any_text = False
    for chunks in files:
        separated = not any_text
        for text in chunks:
            if not separated:
                yield "\n"
                separated = True
            any_text = True
            yield text


def _decoded_chunks(source: Source, progress: Progress) -> Iterator[str]:
    """Decode a file CHUNK_BYTES at a time, as Python's text mode would: the incremental
    decoders keep a multibyte character or a \\r\\n pair split across chunks whole."""
    decoder = source.codec.incrementaldecoder("strict")
    newlines = io.IncrementalNewlineDecoder(decoder, translate=True)
    try:
        with open(source.path, "rb") as file:
            file.seek(source.start)
            offset = source.start
            while True:
                chunk = file.read(CHUNK_BYTES)
                # Bytes the decoder holds from the last chunk (the start of a character)
                # come before this chunk in what it reports errors against.
                held = decoder.getstate()[0]
                held_count = len(held) if isinstance(held, bytes) else 0
                try:
                    text = newlines.decode(chunk, final=not chunk)
                except UnicodeDecodeError as error:
                    raise _decode_error(source, error, offset - held_count) from None
                except UnicodeError as error:  # a codec's other refusals: UTF-16 without a BOM
                    raise _codec_refusal(source, error) from None
                offset += len(chunk)
                progress.advance(len(chunk))
                if text:
                    yield text
                if not chunk:
                    return
    except OSError as error:
        raise CorpusError(f"cannot read {source.path}: {strerror(error)}") from None


def _codec_refusal(source: Source, error: UnicodeError) -> CorpusError:
    name = source.codec.name
    message = f"{source.path} cannot be decoded as {name}: {error}"
    if name == "utf-16":  # it needs a byte-order mark; utf-16-le and utf-16-be do not
        message += "; pass --encoding utf-16-le or utf-16-be"
    return CorpusError(message)


def _decode_error(source: Source, error: UnicodeDecodeError, input_offset: int) -> CorpusError:
    bad_byte = error.object[error.start]
    offset = input_offset + error.start
    encoding = "UTF-8" if source.codec.name == "utf-8" else source.codec.name
    message = f"{source.path} is not valid {encoding}: byte 0x{bad_byte:02X} at offset {offset}"
    if source.codec.name == "utf-8":
        if _looks_like_latin1(source.path):
            message += ("; it looks like Latin-1 (ISO-8859-1/cp1252) text: pass --encoding "
                        "latin-1 or convert with iconv")
        else:
            message += "; pass --encoding NAME if you know its encoding, or convert it with iconv"
    return CorpusError(message)


def _looks_like_latin1(path: Path) -> bool:
    """Mostly printable ASCII with some high bytes, as Western European text in Latin-1
    or cp1252 is (a legacy CJK encoding or random bytes has far more high bytes)."""
    try:
        with open(path, "rb") as file:
            sample = np.frombuffer(file.read(SNIFF_BYTES), dtype=np.uint8)
    except OSError:
        return False
    if len(sample) == 0 or (sample == 0).any():
        return False
    printable_ascii = ((sample >= 0x20) & (sample < 0x7F)) | np.isin(sample, (9, 10, 13))
    return printable_ascii.mean() >= 0.7


def _lowercased(chunks: Iterable[str]) -> Iterator[str]:
    """str.lower() of each chunk, cut at whitespace so it sees whole words: the lower case
    of a Greek capital sigma depends on the letter after it."""
    carry = ""
    for text in chunks:
        text = carry + text
        cut = max(text.rfind(" "), text.rfind("\n")) + 1
        if cut == 0 and len(text) > _LONGEST_WORD:
            cut = len(text)  # no whitespace for a long stretch: not words, cut anywhere
        carry = text[cut:]
        if cut:
            yield text[:cut].lower()
    if carry:
        yield carry.lower()


class Progress:
    """Calls on_progress(done, total) at most once per chunk, and once at the end."""

    def __init__(self, total: int, on_progress: Callable[[int, int], None] | None):
        self.total = total
        self.done = 0
        self.on_progress = on_progress

    def advance(self, count: int) -> None:
        if count and self.on_progress is not None:
            self.done = min(self.done + count, self.total)
            self.on_progress(self.done, self.total)

    def finish(self) -> None:
        if self.on_progress is not None and self.done < self.total:
            self.on_progress(self.total, self.total)
