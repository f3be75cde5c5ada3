"""`charlm-tui inspect` and `charlm-tui cells`: why the model writes what it writes.

`inspect` prints the model's distribution over the character after a text, at
temperature 1 and reweighted at each temperature (engine/modeling/nextchar.py); `cells` runs the
model over a text (engine/modeling/trace.py) and ranks its LSTM cells by their correlation with
simple properties of the text (engine/modeling/cellstats.py), or prints the text coloured by one
cell. Both read the checkpoint's numpy sidecar, as `sample` does: no TensorFlow.

Text from a corpus or a file never reaches the terminal raw: control characters are
shown visibly (tui/visible.py). Output that can no longer be written (a pipe closed by
`head`, a terminal gone with SIGHUP ignored) ends the command quietly.
"""

from __future__ import annotations

import argparse
import codecs
import errno
import functools
import io
import json
import os
import stat
import sys

from engine.errors import CorpusError
from tui.visible import visible, visible_line

BAR_WIDTH = 6              # characters of a probability bar at 100%
CONTEXT_SHOWN = 60         # characters of the context printed before the distribution
LONG_TEXT = 50_000         # a text this long takes seconds to trace: say so first

# tanh(c) and h lie in [-1, 1]: a diverging scale, blue below 0, red above (ColorBrewer RdBu).
NEGATIVE, NEUTRAL, POSITIVE = (33, 102, 172), (247, 247, 247), (178, 24, 43)
# Without colour each character gets a mark on the line below it, by its value.
PLAIN_MARKS = ((-0.6, "="), (-0.2, "-"), (0.2, " "), (0.6, "+"), (float("inf"), "#"))


# -- safe text --------------------------------------------------------------------------------
_NAMED = {"\n": "\\n", "\t": "\\t"}


def _visible_char(char: str) -> str:
    """One character as it may reach a terminal (tui/visible.py), a newline and a tab
    named as escapes: in a table or over a mark, they must take one place."""
    return _NAMED.get(char) or visible(char)


def _shown_char(char: str) -> str:
    """A distribution's character in a table: the space visible too."""
    return "\u2423" if char == " " else _visible_char(char)


def _say(console, line: str) -> None:
    """A line of plain text (no markup read in it), wrapped by the terminal, not by rich."""
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def _until_the_output_goes(command):
    """Run `command`; if its reader goes away (EPIPE, or EIO from a vanished terminal),
    stop writing quietly with exit code 1 rather than a traceback on every later write."""
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            code = command(args)
            sys.stdout.flush()  # here, not at exit, where a failure could not be caught
            return code
        except OSError as error:
            if error.errno not in (errno.EPIPE, errno.EIO):
                raise
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush goes nowhere
            return 1
    return run


# -- loading ----------------------------------------------------------------------------------
def _open(args: argparse.Namespace):
    """The run with the checkpoint asked for (its numpy sidecar when it matches: no TensorFlow)."""
    from engine.run.follow import open_run

    def note(message: str) -> None:
        print(f"charlm-tui: note: {message}", file=sys.stderr)

    return open_run(args.run, on_notice=note, rebuild_sidecar=True, checkpoint=args.checkpoint)


def _read_text_file(path: str, max_chars: int) -> str:
    """The first `max_chars` characters of a UTF-8 text file, newlines made "\\n" as the
    corpus loader makes them. Only a regular file is opened (a FIFO or device is refused
    before it is read), and at most 4 bytes a character are read, whatever its size."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise CorpusError(f"--text-file {path} is not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise CorpusError(f"cannot read --text-file {path}: {error.strerror or error}") from None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between the look and the open
            raise CorpusError(f"--text-file {path} is not a regular file")
        limit = 4 * max_chars + 4
        try:
            data = file.read(limit)
        except OSError as error:
            raise CorpusError(f"cannot read --text-file {path}: {error.strerror or error}") from None
    newlines = io.IncrementalNewlineDecoder(codecs.getincrementaldecoder("utf-8-sig")(), translate=True)
    try:
        text = newlines.decode(data, final=len(data) < limit)  # a cut multibyte character waits
    except UnicodeDecodeError:
        raise CorpusError(f"--text-file {path} is not UTF-8 text") from None
    if not text:
        raise CorpusError(f"--text-file {path} is empty")
    return text[:max_chars]


def _held_out_text(saved, max_chars: int) -> tuple[str, str]:
    """(text, what it is): the run's held-out text, from its first line start, if the
    training text is on this machine."""
    from engine.data.trainingtext import seed_corpus
    from engine.data.windows import held_out_text

    corpus = seed_corpus(saved)
    if corpus is None:
        raise CorpusError(f"the training text of {saved.path} is not on this machine, so there is no "
                          "held-out text to run over: give one with --text-file F")
    text = held_out_text(corpus, saved.config.val_fraction, max_chars)
    if not text:
        raise CorpusError(f"the held-out text of {saved.path} is empty: give a text with --text-file F")
    return text, f"the held-out text of {saved.corpus_name}"


# -- inspect ----------------------------------------------------------------------------------
@_until_the_output_goes
def cmd_inspect(args: argparse.Namespace) -> int:
    from engine.modeling.nextchar import next_char

    saved = _open(args)
    distribution = next_char(saved.sampler, args.text, what="--text")
    temperatures = dict(args.temperatures)
    if 1.0 not in temperatures.values():
        temperatures = {"1.0": 1.0, **temperatures}
    if args.json:
        print(json.dumps({
            "run": str(saved.path), "checkpoint": saved.choice, "context": distribution.context,
            "top": {written: [list(pair) for pair in distribution.top(args.top, value)]
                    for written, value in temperatures.items()},
            "entropy_bits": {written: distribution.entropy_bits(value)
                             for written, value in temperatures.items()},
        }))
        return 0
    _print_distribution(saved, args, distribution, temperatures)
    return 0


def _print_distribution(saved, args, distribution, temperatures: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    context = visible_line(distribution.context)
    if len(distribution.context) > CONTEXT_SHOWN:
        context = "\u2026" + visible_line(distribution.context[-CONTEXT_SHOWN:])
    _say(console, f"{saved.path} (checkpoint {saved.choice}): the next character after")
    _say(console, f"  '{context}'")
    table = Table(box=None, pad_edge=False, show_edge=False)
    table.add_column("#", justify="right")
    for written in temperatures:
        table.add_column(f"T={written}", no_wrap=True)
    tops = [distribution.top(args.top, value) for value in temperatures.values()]
    for rank in range(len(tops[0])):
        table.add_row(str(rank + 1), *(_bar_cell(*top[rank]) for top in tops))
    table.add_row("", *(f"{distribution.entropy_bits(value):.2f} bits" for value in temperatures.values()))
    console.print(table)
    _say(console, "(last row: each distribution's entropy; T=1 is the model's own, what `sample` draws from)")


def _bar_cell(char: str, probability: float):
    from rich.text import Text

    eighths = round(probability * BAR_WIDTH * 8)
    bar = "\u2588" * (eighths // 8) + (chr(0x2590 - eighths % 8) if eighths % 8 else "")
    return Text(f"{_shown_char(char):<2} {probability:6.1%} {bar}")


# -- cells ------------------------------------------------------------------------------------
@_until_the_output_goes
def cmd_cells(args: argparse.Namespace) -> int:
    from engine.modeling.cellstats import rank_cells, text_properties
    from engine.modeling.trace import trace

    saved = _open(args)
    if args.text_file:
        text, source = _read_text_file(args.text_file, args.chars), args.text_file
    else:
        text, source = _held_out_text(saved, args.chars)
    layers = saved.config.layers
    layer_number = layers if args.layer is None else args.layer
    if layer_number > layers:
        raise ValueError(f"--layer must be from 1 to {layers}: the model has {layers} LSTM layer"
                         f"{'s' if layers > 1 else ''}")
    units = saved.config.units
    if args.cell is not None and args.cell >= units:
        raise ValueError(f"--cell must be from 0 to {units - 1}: layer {layer_number} has {units} cells")
    if len(text) >= LONG_TEXT and sys.stderr.isatty():
        print(f"charlm-tui: running the model over {len(text):,} characters (a few seconds)...",
              file=sys.stderr)
    traced = trace(saved.sampler, text, gates=False, probabilities=False,
                   what=f"--text-file {args.text_file}" if args.text_file else "the held-out text")
    activations = traced.layers[layer_number - 1].activations
    properties = text_properties(traced.text)
    where = {"run": str(saved.path), "checkpoint": saved.choice, "layer": layer_number, "layers": layers,
             "cells": units, "chars": len(traced.text), "source": source}
    if args.cell is not None:
        return _print_cell(args, traced.text, activations, properties, where)
    ranking = rank_cells(activations, properties)
    if args.json:
        print(json.dumps({**where, "properties": {name: [score.as_json() for score in scores]
                                                  for name, scores in ranking.items()}}))
        return 0
    _print_ranking(ranking, where, args.top)
    return 0


def _describe(where: dict) -> str:
    return (f"{where['run']} (checkpoint {where['checkpoint']}), layer {where['layer']} of {where['layers']} "
            f"({where['cells']} cells), over {where['chars']:,} characters of "
            f"{visible_line(where['source'])}")


def _print_ranking(ranking: dict, where: dict, top: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    _say(console, f"Cells of {_describe(where)}.")
    _say(console, "Each property's best cells: Pearson's r, then the cell and its activation, c (tanh of "
                  "the cell state) or h (the output).")
    shown = min(top, where["cells"])
    table = Table(box=None, pad_edge=False, show_edge=False)
    table.add_column("property", no_wrap=True)
    for rank in range(1, shown + 1):
        table.add_column(_ordinal(rank), no_wrap=True)
    for name, scores in ranking.items():
        if scores:
            table.add_row(name, *(f"{score.r:+.2f} {score.cell}{score.activation}"
                                  for score in scores[:shown]))
        else:
            table.add_row(name, "-")
    console.print(table)
    constant = [name for name, scores in ranking.items() if not scores]
    if constant:
        _say(console, f"-: never changes in this text, so nothing to correlate ({', '.join(constant)}).")
    _say(console, "A small |r| (below about 0.3) means no single cell tracks that property: a model trained "
                  "briefly may have none. `--cell N` shows one cell over the text.")


def _ordinal(number: int) -> str:
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def _print_cell(args, text: str, activations: dict, properties: dict, where: dict) -> int:
    from engine.modeling.cellstats import correlations

    values = activations[args.activation][:, args.cell]
    r = correlations({args.activation: values[:, None]}, properties)[args.activation][:, 0]
    with_properties = dict(zip(properties, (float(value) for value in r)))
    if args.json:
        print(json.dumps({**where, "cell": args.cell, "activation": args.activation, "text": text,
                          "values": [float(value) for value in values], "r": with_properties}))
        return 0
    from rich.console import Console

    console = Console(highlight=False)
    kind = "tanh(c)" if args.activation == "c" else "h"
    _say(console, f"Cell {args.cell} ({kind}) of {_describe(where)}.")
    _say(console, "r with: " + ", ".join(f"{name} {value:+.2f}" for name, value in with_properties.items()))
    if console.no_color or console.color_system is None:
        _print_plain_cell(console, text, values)
    else:
        _print_coloured_cell(console, text, values)
    return 0


def _colour(value: float):
    from rich.color import Color

    end = POSITIVE if value > 0 else NEGATIVE
    weight = min(abs(float(value)), 1.0)
    return Color.from_rgb(*(round(n + (e - n) * weight) for n, e in zip(NEUTRAL, end)))


def _print_coloured_cell(console, text: str, values) -> None:
    from rich.style import Style
    from rich.text import Text

    legend = Text("-1 ")
    for step in range(-8, 9):
        legend.append("  ", Style(bgcolor=_colour(step / 8)))
    legend.append(" +1   (blue: negative, red: positive; a newline shows as \u21b5)")
    console.print(legend)
    coloured = Text()
    for char, value in zip(text, values):
        style = Style(color="black", bgcolor=_colour(value))
        if char == "\n":
            coloured.append("\u21b5", style)
            coloured.append("\n")
        else:
            coloured.append("\u2192" if char == "\t" else _visible_char(char), style)
    console.print(coloured)


def _mark(value: float) -> str:
    return next(mark for bound, mark in PLAIN_MARKS if value < bound)


def _print_plain_cell(console, text: str, values) -> None:
    """No colour: each line of text, and under it a mark per character for its value."""
    from rich.cells import cell_len

    _say(console, "Under each line, a mark per character: '=' below -0.6, '-' below -0.2, ' ' near 0, "
                  "'+' above 0.2, '#' above 0.6 (a newline shows as \u21b5).")
    width = max(console.width, 20)
    shown, marks = [], []  # of the line being built, as wide as each other
    for char, value in zip(text, values):
        glyph = "\u21b5" if char == "\n" else "\u2192" if char == "\t" else _visible_char(char)
        if len(marks) + cell_len(glyph) > width:
            _print_pair(console, shown, marks)
        shown.append(glyph)
        marks.extend(_mark(value) * cell_len(glyph))
        if char == "\n":
            _print_pair(console, shown, marks)
    if shown:
        _print_pair(console, shown, marks)


def _print_pair(console, shown: list[str], marks: list[str]) -> None:
    """Print a line of text and its marks, and empty both for the next line."""
    _say(console, "".join(shown))
    _say(console, "".join(marks).rstrip())
    shown.clear()
    marks.clear()
