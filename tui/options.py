"""The command line, parsed into what the engine takes: a `RunRequest` for training
(the app and `charlm-tui train`), or the options of `sample` and `watch`.

Shared by tui/cli.py (which dispatches) and tui/headless.py; imports neither.
"""

from __future__ import annotations

import argparse
import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from engine.config import (
    MAX_TEMPERATURES,
    PRESETS,
    SCHEDULES,
    TEMPERATURE_RULE,
    TrainConfig,
    preset,
    valid_temperature,
)
from engine.run.session import RunRequest

EXAMPLES = """\
commands:
  charlm-tui                       open the app on the default corpus and train
  charlm-tui train [options]       train headless (nohup/tmux friendly), progress on stdout
  charlm-tui sample --run DIR      generate text from a saved run, no training
  charlm-tui watch DIR             follow a run another process trains: plot and samples
  charlm-tui inspect --run DIR --text T   the model's distribution of the character after T
  charlm-tui cells --run DIR       which LSTM cells track line position, quotes, brackets...

examples:
  charlm-tui --corpus corpora/mybook.txt
  charlm-tui train --corpus nietzsche --preset book --run runs/book --epochs 20
  charlm-tui train --corpus ~/books/moby.txt --run /tmp/r --time-budget 60
  charlm-tui sample --run /tmp/r --temperatures 0.2,0.5,1.0,1.2 --length 400
  charlm-tui --run /tmp/r --no-train

Run `charlm-tui train --help` or `charlm-tui sample --help` for their options."""


# -- argument parsing ----------------------------------------------------------------------
COMMANDS = ("train", "sample", "watch", "inspect", "cells")


class Parser(argparse.ArgumentParser):
    """argparse, suggesting the closest option (or command) for a mistyped one, as
    Python 3.12's suggest_on_error does for choices."""

    def __init__(self, *args, commands: tuple[str, ...] = (), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.commands = commands

    def error(self, message: str):
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            # Each suggestion once: --stepp and --setp both mean --step.
            words = message[len(prefix):].split()
            hints = list(dict.fromkeys(hint for hint in map(self._closest, words) if hint))
            if hints:
                message += "; did you mean " + " or ".join(hints) + "?"
        super().error(message)

    def _closest(self, word: str) -> str | None:
        if word.startswith("--"):
            # Every option this parser offers, read from its own help (public API only).
            candidates = sorted(set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", self.format_help())))
            name = word.split("=", 1)[0]
        elif not word.startswith("-") and self.commands:
            candidates, name = list(self.commands), word
        else:
            return None
        matches = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
        return matches[0] if matches else None


def _temperatures(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if not 1 <= len(values) <= MAX_TEMPERATURES or not all(map(valid_temperature, values)):
        raise argparse.ArgumentTypeError(f"give 1 to {MAX_TEMPERATURES} temperatures, each "
                                         f"{TEMPERATURE_RULE}, e.g. 0.2,0.5,1.0,1.2")
    return values


def _sampling_option(option: str, convert):
    """An argparse type: `convert`, then the rule the engine's sampler applies to `option`,
    so a value is refused here (argparse names the option) rather than ignored later."""
    def parse(text: str):
        from engine.modeling.sampler import option_problem

        try:
            value = convert(text)
        except ValueError:
            value = None  # breaks every rule
        problem = option_problem(option, value)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem}, not {text!r}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"not a number of seconds (0 or more): {text!r}")
    return value


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}


def _duration(text: str) -> float:
    """Seconds from `90`, `90s`, `10m` or `1h` (a time budget; its range is the engine's rule)."""
    cleaned = text.strip().lower()
    scale = DURATION_UNITS.get(cleaned[-1:], None)
    number = cleaned[:-1] if scale else cleaned
    try:
        return float(number) * (scale or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time (seconds, or e.g. 90s, 10m, 1h): {text!r}") from None


def temperature_label(temperature: float) -> str:
    """How `sample` and `train` title a temperature's text: 0.5, or 0.0 (greedy)."""
    return f"{temperature} (greedy)" if temperature == 0 else f"{temperature}"


ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}
MAX_SEED_FILE_BYTES = 100_000


def unescape(text: str) -> str:
    r"""A seed typed on a command line: \n, \t and \\ become a newline, a tab and a
    backslash (char-rnn's `-primetext 'ROMEO:\n'`); any other backslash stays as typed."""
    return re.sub(r"\\([nt\\])", lambda match: ESCAPES[match.group(1)], text)


def _add_corpus_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", default=None, metavar="X",
                        help="a UTF-8 text file, a folder of .txt files, or a named corpus: nietzsche "
                             "(default), pydocs, or any corpora/NAME.txt")
    parser.add_argument("--run", default=None, metavar="DIR",
                        help="run directory (default: runs/<corpus name>); an existing run is resumed")
    parser.add_argument("--fresh", action="store_true",
                        help="start over instead of resuming the run (the previous run is moved, whole, "
                             "to a sibling folder RUN.prev-YYYYmmdd-HHMMSS)")
    case = parser.add_mutually_exclusive_group()
    case.add_argument("--lowercase", dest="lowercase", action="store_const", const=True, default=None,
                      help="lower-case the corpus (the book preset does; fast keeps case)")
    case.add_argument("--keep-case", dest="lowercase", action="store_const", const=False,
                      help="keep the corpus's case (the default, except for the book preset)")
    parser.add_argument("--encoding", default=None, help="text encoding of the corpus (default: UTF-8)")


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training (an option left out keeps the preset's or the run's value)")
    group.add_argument("--preset", choices=PRESETS, default=None,
                       help="book: the book's recipe exactly; fast (default): every position is a target")
    group.add_argument("--units", type=int, help="LSTM units per layer (128)")
    group.add_argument("--layers", type=int, help="stacked LSTM layers (1)")
    group.add_argument("--dropout", type=float, help="dropout after each LSTM layer (0)")
    group.add_argument("--maxlen", type=int, help="characters per window (book 60, fast 16)")
    group.add_argument("--step", type=int, help="a new window every STEP chars (book 3, fast 8)")
    group.add_argument("--batch-size", type=int, help="windows per batch (book 128, fast 256)")
    group.add_argument("--lr", type=float, help="learning rate (book 0.01 RMSprop, fast 0.02 Adam, its peak)")
    group.add_argument("--schedule", choices=SCHEDULES, default=None,
                       help="the learning rate over the run: cosine (fast): warmed up, held, then "
                            "decayed to the run's planned end (its epochs, --steps or --time-budget); "
                            "constant (book)")
    group.add_argument("--epochs", type=int, help="epochs in total (book 60, fast 25)")
    group.add_argument("--time-budget", type=_duration, metavar="TIME",
                       help="stop after this long: seconds, or 90s, 10m, 1h (this session only)")
    group.add_argument("--steps", type=int, metavar="N",
                       help="stop after N optimizer steps (this session only)")
    group.add_argument("--val-fraction", type=float, help="held-out tail of the corpus (0.1)")
    group.add_argument("--seed", type=_sampling_option("--seed", int),
                       help="random seed for shuffling and sampling (1337)")
    group.add_argument("--temperatures", type=_temperatures, help="sampling temperatures (0.2,0.5,1.0,1.2)")
    group.add_argument("--strategy", choices=("default", "mirrored", "multiworker"), default=None,
                       help="mirrored: every local GPU (tf.distribute.MirroredStrategy); multiworker: "
                            "every GPU of every machine in $TF_CONFIG, headless only (see the README); "
                            "not kept with the run")
    group.add_argument("--mixed-precision", action="store_const", const=True, default=None,
                       help="float16/bfloat16 compute on GPUs (the softmax stays float32)")
    group.add_argument("--patience", type=int, metavar="N",
                       help="late in a run (the learning rate down to a quarter of its peak), stop when the "
                            "held-out loss has not improved for N epochs, and end at the best checkpoint's "
                            "weights (fast 3; 0: off, book)")
    group.add_argument("--keep-every", type=int, metavar="N",
                       help="also keep the checkpoint of every Nth epoch as model.epoch-NNNN.keras (0: off)")
    group.add_argument("--keep-max", type=int, metavar="K",
                       help="keep at most K of those epoch checkpoints, the oldest go (5)")
    group.add_argument("--checkpoint-every", type=_seconds, metavar="SECONDS",
                       help="seconds between checkpoints within an epoch (300; 0: after every batch)")


def _overrides(args: argparse.Namespace) -> dict:
    names = ("units", "layers", "dropout", "maxlen", "step", "batch_size", "lr", "schedule", "epochs",
             "time_budget", "steps", "val_fraction", "seed", "temperatures", "checkpoint_every",
             "patience", "keep_every", "keep_max",
             "strategy", "mixed_precision")
    overrides = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if args.lowercase is not None:
        overrides["lowercase"] = args.lowercase
    if getattr(args, "length", None) is not None:  # train: samples after each epoch
        overrides["sample_length"] = args.length
    return overrides


def app_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="charlm-tui", commands=COMMANDS, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a character-level LSTM language model and watch it learn, live: "
                    "progress, loss plot, and text sampled at four temperatures.",
        epilog=EXAMPLES)
    _add_corpus_options(parser)
    parser.add_argument("--no-train", action="store_true", help="open a saved --run and only generate")
    parser.add_argument("--checkpoint", default=None, metavar="WHICH",
                        help="with --no-train: " + CHECKPOINT_HELP)
    _add_training_options(parser)
    return parser


def train_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="charlm-tui train",
                                     description="Train headless, printing what the book prints.")
    _add_corpus_options(parser)
    _add_training_options(parser)
    parser.add_argument("--length", type=int, default=None, help="characters sampled per temperature "
                        "after each epoch (400; 0 for none)")
    parser.add_argument("--tensorboard", nargs="?", const="", default=None, metavar="DIR",
                        help="write TensorBoard logs (default DIR: RUN/tensorboard)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be trained and exit")
    parser.add_argument("--json", action="store_true", help="end with a one-line JSON summary")
    return parser


def sample_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="charlm-tui sample", description="Generate text from a saved run.")
    parser.add_argument("--run", required=True, metavar="DIR", help="the run directory to sample from")
    parser.add_argument("--temperatures", type=_temperatures, default=(0.2, 0.5, 1.0, 1.2),
                        help=f"comma-separated sampling temperatures, 1 to {MAX_TEMPERATURES} of them, "
                             f"each {TEMPERATURE_RULE} (0.2,0.5,1.0,1.2)")
    parser.add_argument("--length", type=int, default=400, help="characters per temperature (400)")
    seed = parser.add_mutually_exclusive_group()
    seed.add_argument("--seed-text", type=unescape, default=None, metavar="T",
                      help=r"text to start from, with \n, \t and \\ for a newline, a tab and a "
                           r"backslash, e.g. 'ROMEO:\n' (default: an excerpt of the training corpus)")
    seed.add_argument("--seed-file", default=None, metavar="FILE",
                      help=f"start from the text of a UTF-8 file (at most {MAX_SEED_FILE_BYTES:,} bytes)")
    parser.add_argument("--checkpoint", default=None, metavar="WHICH", help=CHECKPOINT_HELP)
    parser.add_argument("--num-samples", type=int, default=None, metavar="N",
                        help="N independent samples per temperature (1); with --json each "
                             "temperature then maps to a list")
    parser.add_argument("--top-k", type=_sampling_option("--top-k", int), default=None, metavar="K",
                        help="sample among the K likeliest")
    parser.add_argument("--top-p", type=_sampling_option("--top-p", float), default=None, metavar="P",
                        help="nucleus sampling mass, above 0 and at most 1")
    parser.add_argument("--seed", type=_sampling_option("--seed", int), default=None,
                        help="random seed (reproducible output)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def watch_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="charlm-tui watch",
        description="Follow a run directory that another process is training (charlm-tui train "
                    "under nohup or tmux): its loss plot and progress, and samples from its newest "
                    "checkpoint. Nothing is written to the run directory.")
    parser.add_argument("run", metavar="DIR", help="the run directory being trained")
    parser.add_argument("--temperatures", type=_temperatures, default=None,
                        help="sampling temperatures (default: the run's)")
    parser.add_argument("--length", type=int, default=None,
                        help="characters sampled per temperature (default: the run's, else 400)")
    parser.add_argument("--seed", type=_sampling_option("--seed", int), default=None,
                        help="random seed for seed texts and sampling")
    return parser


def _written_temperatures(text: str) -> tuple[tuple[str, float], ...]:
    """--temperatures as `_temperatures` reads them, each kept with its spelling ("1.0", "0.5"):
    `inspect --json` keys its distributions by the temperatures as written."""
    values = _temperatures(text)
    written = tuple(part.strip() for part in text.split(",") if part.strip())
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"give each temperature once: {text!r}")
    return tuple(zip(written, values))


def _count(low: int, high: int):
    """An argparse type: a whole number from `low` to `high`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low:,} to {high:,}, not {text!r}")
        return value

    return parse


MAX_CELLS_CHARS = 100_000
CHECKPOINT_HELP = ("latest (model.keras, else model.prev.keras), best (model.best.keras: the lowest held-out "
                   "loss), or a .keras FILE of this run; default: best once the run has stopped and kept "
                   "one, else latest")


def _add_checkpoint_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None, metavar="WHICH", help=CHECKPOINT_HELP)


def inspect_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="charlm-tui inspect",
                    description="The model's probability distribution over the character after a text, at "
                                "temperature 1 and reweighted at each temperature (the book's "
                                "reweight_distribution): what the sampler draws from.")
    parser.add_argument("--run", required=True, metavar="DIR", help="the run directory")
    parser.add_argument("--text", required=True, type=unescape, metavar="T",
                        help=r"the context, with \n, \t and \\ for a newline, a tab and a backslash, "
                             r"e.g. 'ROMEO:\n'")
    parser.add_argument("--top", type=_count(1, 1000), default=10, metavar="K",
                        help="the K likeliest characters (10)")
    parser.add_argument("--temperatures", type=_written_temperatures,
                        default=_written_temperatures("0.2,0.5,1.0,1.2"), metavar="LIST",
                        help="temperatures to reweight at (0.2,0.5,1.0,1.2); temperature 1 is always shown")
    _add_checkpoint_option(parser)
    parser.add_argument("--json", action="store_true",
                        help='print one JSON object: "top" maps each temperature as written to '
                             "[[char, probability], ...], likeliest first")
    return parser


def cells_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="charlm-tui cells",
                    description="Run the model over a text and rank its LSTM cells by their correlation "
                                "(Pearson's r) with simple properties of the text: position in line, inside "
                                "quotes, inside brackets, start of a word, upper case, just after a newline. "
                                'Activation "c" is tanh of the cell state, "h" the output.')
    parser.add_argument("--run", required=True, metavar="DIR", help="the run directory")
    parser.add_argument("--text-file", default=None, metavar="F",
                        help="a UTF-8 text file to run over (default: the run's held-out text, the tail of "
                             "its training text it never trained on, when that text is on this machine)")
    parser.add_argument("--chars", type=_count(1, MAX_CELLS_CHARS), default=10_000, metavar="N",
                        help=f"characters of text to run over (10,000; at most {MAX_CELLS_CHARS:,})")
    parser.add_argument("--layer", type=_count(1, 1000), default=None, metavar="L",
                        help="which LSTM layer, 1 the first (default: the last)")
    parser.add_argument("--cell", type=_count(0, 1_000_000), default=None, metavar="N",
                        help="print the text coloured by cell N's activation (cells count from 0); with "
                             "--json, its values per character")
    parser.add_argument("--activation", choices=("c", "h"), default="c",
                        help="with --cell: c, tanh of the cell state (default), or h, the output")
    parser.add_argument("--top", type=_count(1, 1_000_000), default=5, metavar="K",
                        help="best cells shown per property (5; --json lists every cell)")
    _add_checkpoint_option(parser)
    parser.add_argument("--json", action="store_true",
                        help='print one JSON object: "properties" maps each property to '
                             '[{"cell": N, "r": R, "activation": "c" or "h"}, ...], largest |r| first')
    return parser


def run_request(args: argparse.Namespace) -> RunRequest:
    """What `charlm-tui` and `charlm-tui train` ask the engine to train."""
    tensorboard = getattr(args, "tensorboard", None)
    return RunRequest(
        corpus=args.corpus or "nietzsche", run_dir=Path(args.run) if args.run else None,
        preset=args.preset, overrides=_overrides(args), fresh=args.fresh, encoding=args.encoding,
        tensorboard_dir=tensorboard)  # "": RUN/tensorboard


def refuse_a_model_too_big(request: RunRequest) -> None:
    """Refuse (SettingError) settings whose model cannot fit this machine's memory, before
    the corpus is read (its vocabulary taken at its smallest: engine/scale/memory.py)."""
    from engine.scale.memory import refuse_if_too_big

    if request.run_dir is not None:
        config = request.settings(Path(request.run_dir))  # a resumed run's own, with the options given
    else:
        config = preset(request.preset or "fast", **request.overrides)
    refuse_if_too_big(config)


def refuse_a_missing_corpus(request: RunRequest) -> None:
    """Refuse (CorpusError) a corpus that names nothing: no file, folder or named corpus
    (what loading it would say at once, said before the app's screen opens)."""
    from engine.data.corpus import corpus_problem

    if isinstance(request.corpus, str):
        problem = corpus_problem(request.corpus)
        if problem:
            from engine.errors import CorpusError

            raise CorpusError(problem)


@dataclass
class AppOptions:
    corpus: str = "nietzsche"       # shown until the run says more
    run_dir: str | None = None      # None: runs/<corpus name> (mode "train")
    mode: str = "train"             # "train", "saved" (--no-train) or "watch" (another process trains)
    request: RunRequest | None = None  # mode "train": what to train
    seed: int | None = None         # seed texts and sampling (fixed: deterministic output)
    checkpoint: str | None = None   # mode "saved": latest, best, a .keras file of the run, None: the default
    temperatures: tuple[float, ...] | None = None  # None: the run's
    sample_length: int | None = None               # None: the run's
    encoding: str | None = None

    def __post_init__(self) -> None:
        if self.mode == "train" and self.request is None:
            self.request = RunRequest(corpus=self.corpus, run_dir=self.run_dir)

    def config_defaults(self) -> TrainConfig:
        """The settings the screen starts with, before the run tells its own."""
        if self.request is not None:
            try:
                return preset(self.request.preset or "fast", **self.request.overrides)
            except ValueError:
                pass
        return TrainConfig()
