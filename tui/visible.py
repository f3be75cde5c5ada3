"""Text from a file, shown in a terminal as text: the one safe printer.

A corpus, a run directory (config.json's excerpts, file names) or a file name is data.
Printed raw, its control characters are commands to the terminal: ESC [ 2 J clears the
screen, OSC 0 sets the window title, OSC 52 writes the clipboard, OSC 8 makes a link.
rich's `markup=False` does not stop them, nor does Textual. So everything shown from
such a source goes through `visible` first: each control character becomes a visible
one, the Unicode control pictures (ESC is ␛, BEL ␇, DEL ␡), a C1 control its 7-bit
equivalent in pictures (CSI, 0x9B, is ␛[), a lone surrogate (a file name that is not
UTF-8) the replacement character, which any terminal can print, and the invisible
characters that reorder or break what follows them (bidirectional overrides and
isolates, zero-width marks, the line and paragraph separators) their code point, as
`⟨U+202E⟩`. Newlines and tabs are kept, or drawn too where the text must stay on one line.

Files written (samples/*.txt, exports) keep the text as it was generated.
"""

from __future__ import annotations

import functools
import sys

NEWLINE_SHOWN = "⏎"  # a newline, where the text must stay on one line
DEL_PICTURE = "␡"
ESC_PICTURE = chr(0x2400 + 0x1B)
# Characters that draw nothing yet change how the rest of a line is shown ("Trojan
# Source"): zero-width marks, bidirectional embeddings, overrides and isolates, the line
# and paragraph separators, the byte-order mark.
REORDERING = (*range(0x200B, 0x2010), 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0xFEFF)


@functools.cache
def _table(newline: str, tab: str) -> dict[int, str]:
    """str.translate's table: C0 controls, DEL, C1 controls and lone surrogates."""
    table: dict[int, str] = {code: chr(0x2400 + code) for code in range(0x20)}
    table[0x7F] = DEL_PICTURE
    # A C1 control is ESC followed by the character 0x40 below it (7-bit code extension).
    table.update({code: ESC_PICTURE + chr(code - 0x40) for code in range(0x80, 0xA0)})
    table.update({code: "\ufffd" for code in range(0xD800, 0xE000)})
    table.update({code: f"⟨U+{code:04X}⟩" for code in REORDERING})
    table[ord("\n")] = newline
    table[ord("\t")] = tab
    return table


def visible(text: str, *, newline: str = "\n", tab: str = "\t") -> str:
    """`text` with every control character shown visibly; newlines and tabs kept (or
    replaced by `newline` and `tab`)."""
    return text.translate(_table(newline, tab))


def visible_line(text: str) -> str:
    """`text` on one line (a file name, a message, a seed in a title): ⏎ for a newline, a
    space for a tab, and every other control character visible."""
    return visible(text, newline=NEWLINE_SHOWN, tab=" ")


def print_visible(text: str = "", *, file=None) -> None:
    """print(), for text that may hold anything: newlines and tabs kept, the rest visible."""
    print(visible(text), file=file if file is not None else sys.stdout)


_PICTURES = {chr(0x2400 + code): chr(code) for code in range(0x20)} | {DEL_PICTURE: "\x7f"}


def restore_controls(text: str, known) -> str:
    """`visible`'s pictures turned back into the control characters they show, where
    `known(character)` says the control character is wanted (the model's vocabulary:
    a seed shown in an editor as text goes back to the text it was)."""
    return "".join(_PICTURES[ch] if ch in _PICTURES and known(_PICTURES[ch]) else ch for ch in text)
