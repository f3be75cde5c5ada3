"""The `charlm-tui` command: the app by default, or headless `train`, `sample` and `watch`.

Nothing here imports TensorFlow at module level: `charlm-tui --help` answers at once,
and the app paints before TensorFlow has finished importing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading

from engine.errors import CharlmError
from tui import options, streams
from tui.visible import print_visible, visible_line

COMMANDS = options.COMMANDS


def _error(message: str, code: int = 1) -> int:
    """One line on stderr; the message may name files or quote a run directory, so its
    control characters are shown, not sent to the terminal (tui/visible.py)."""
    print(f"charlm-tui: error: {visible_line(message)}", file=sys.stderr)
    return code


def _note(message: str) -> None:
    print(f"charlm-tui: note: {visible_line(message)}", file=sys.stderr)


# -- commands --------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from tui import headless

    return headless.run(args)


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np

    from engine.run.follow import open_run

    if args.length < 0 or args.length > 1_000_000:
        return _error("--length must be between 0 and 1000000", 2)
    if args.num_samples is not None and not 1 <= args.num_samples <= 1000:
        return _error("--num-samples must be between 1 and 1000", 2)
    seed_text = _read_seed_file(args.seed_file) if args.seed_file else args.seed_text
    # The checkpoint is read without TensorFlow when its numpy sidecar matches it (engine/files/sidecar.py).
    saved = open_run(args.run, on_notice=_note, rebuild_sidecar=True, checkpoint=args.checkpoint)
    if seed_text is None:
        rng = np.random.default_rng(args.seed)
        if saved.excerpts:
            seed_text = saved.excerpts[int(rng.integers(len(saved.excerpts)))]
        else:
            seed_text = saved.vocab[-1]
    try:
        rounds = [saved.sampler.generate(seed_text, args.temperatures, args.length, seed=seed,
                                         top_k=args.top_k, top_p=args.top_p)
                  for seed in _sample_seeds(args.seed, args.num_samples or 1)]
    except ValueError as error:
        return _error(str(error), 2)
    checkpoint = saved.checkpoint
    if args.json:  # (json.dumps escapes every control character: \u001b)
        print(json.dumps({"run": str(saved.path), "checkpoint": str(checkpoint.path) if checkpoint else None,
                          "step": checkpoint.step if checkpoint else None, "seed_text": seed_text,
                          "preset": saved.config.preset,
                          **_json_samples(saved, rounds, listed=args.num_samples is not None)}))
        return 0
    if checkpoint is not None:
        step = f"step {checkpoint.step:,}" if checkpoint.step is not None else "step unknown"
        print_visible(f"--- Checkpoint: {checkpoint.path} ({step})")
    print_visible(f"--- Generating with seed: {seed_text!r}")
    for temperature in rounds[0]:  # each temperature's samples together
        for number, samples in enumerate(rounds, 1):
            which = f" (sample {number} of {len(rounds)})" if len(rounds) > 1 else ""
            print_visible(f"\n----- temperature: {options.temperature_label(temperature)}{which}")
            print_visible(seed_text + samples[temperature])
    return 0


def _read_seed_file(path: str) -> str:
    """nanoGPT's --start=FILE: the seed is a UTF-8 file's text. Read only if it is a
    regular file (never through a link, never a FIFO that would hang), and not too big."""
    from engine.errors import CorpusError
    from engine.files.safeio import FileTooLarge, NotRegularFile, read_regular_file

    limit = options.MAX_SEED_FILE_BYTES
    try:
        data = read_regular_file(path, limit)
    except NotRegularFile as error:
        raise CorpusError(f"--seed-file {path} is {error.kind}, not a regular file; give the file "
                          "itself (a link, FIFO or device is never read)") from None
    except FileTooLarge:
        raise CorpusError(f"--seed-file {path} is over {limit:,} bytes; "
                          "a seed needs only its last few hundred characters") from None
    except OSError as error:
        raise CorpusError(f"cannot read --seed-file {path}: {error.strerror or error}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CorpusError(f"--seed-file {path} is not UTF-8 text") from None
    if not text:
        raise CorpusError(f"--seed-file {path} is empty")
    return text


def _sample_seeds(seed: int | None, count: int) -> list[int | None]:
    """One sampling seed per round: the given one first (one round is what it always was),
    then seeds drawn from it, so every round differs and all are reproducible."""
    if seed is None:
        return [None] * count
    import numpy as np

    rng = np.random.default_rng(seed)
    return [seed] + [int(rng.integers(2**31)) for _ in range(count - 1)]


def _json_samples(saved, rounds: list[dict], listed: bool) -> dict:
    """"samples" and the memorization check: {temperature: text}, or with --num-samples
    {temperature: [text, ...]}."""
    from tui.memorization import memorization_report

    if listed:
        samples = {str(t): [samples[t] for samples in rounds] for t in rounds[0]}
    else:
        samples = {str(t): text for t, text in rounds[0].items()}
    return {"samples": samples, **memorization_report(saved, samples)}


def cmd_inspect(args: argparse.Namespace) -> int:
    from tui import inspection

    return inspection.cmd_inspect(args)


def cmd_cells(args: argparse.Namespace) -> int:
    from tui import inspection

    return inspection.cmd_cells(args)


def cmd_watch(args: argparse.Namespace) -> int:
    from engine.run.follow import read_run
    from tui.app import run_app

    if args.length is not None and not 1 <= args.length <= 100_000:
        return _error("--length must be between 1 and 100000", 2)
    saved = read_run(args.run)  # refuses a directory that is not a run, before any screen
    app_options = options.AppOptions(corpus=saved.corpus_name, run_dir=str(saved.path), mode="watch",
                                     seed=args.seed, temperatures=args.temperatures,
                                     sample_length=args.length)
    return run_app(app_options)


def cmd_app(args: argparse.Namespace) -> int:
    from tui.app import run_app

    if args.no_train and not args.run:
        return _error("--no-train needs --run DIR (a saved run to sample from)", 2)
    if args.strategy == "multiworker":
        return _error("multi-worker training runs headless: start `charlm-tui train --strategy "
                      "multiworker` on every machine, then `charlm-tui watch RUN` on the chief's", 2)
    if args.checkpoint is not None and not args.no_train:
        return _error("--checkpoint chooses what --no-train samples from; "
                      "training resumes from the latest", 2)
    if args.no_train:
        from engine.files.checkpoints import checkpoint_path
        from engine.files.rundir import RunDir
        from engine.run.follow import read_run

        saved = read_run(args.run)  # refuses a directory that is not a run, before any screen
        checkpoint_path(RunDir(saved.path), args.checkpoint)  # ... and a checkpoint it does not have
        return run_app(options.AppOptions(corpus=saved.corpus_name, run_dir=str(saved.path), mode="saved",
                                          checkpoint=args.checkpoint))
    request = options.run_request(args)
    request.check()  # bad settings and a directory training could hurt: refused before the screen opens
    options.refuse_a_model_too_big(request)  # ... a model that cannot fit this machine's memory
    options.refuse_a_missing_corpus(request)  # ... and a corpus that is not there
    return run_app(options.AppOptions(corpus=str(request.corpus), run_dir=args.run, request=request))


def main(argv: list[str] | None = None) -> int:
    """The program (argv None: skips TensorFlow's slow interpreter teardown) or a call.

    Output whose reader has gone (`charlm-tui sample | head -1`, a closed terminal) ends
    the program quietly, as Python's docs advise (tui/streams.py): 141 for a closed pipe,
    129 for a terminal gone, never a traceback."""
    if argv is not None:
        return _main(argv)
    try:
        code = _main(sys.argv[1:])
        sys.stdout.flush()  # (what is still buffered fails here, not at the interpreter's exit)
    except OSError as error:
        if streams.lost_output(error) is None:
            raise
        code = streams.output_gone(error)
    if "tensorflow" in sys.modules or threading.active_count() > 1:
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """Everything is saved by now, but finalising an interpreter that holds TensorFlow
    would keep the shell prompt waiting a second or more, and one with a thread still
    running (the app left at start-up, say, while a worker begins importing TensorFlow)
    can abort (SIGABRT, seen once in ~20 hangups at start-up under load): remove
    TensorFlow's temporary files, flush, then leave."""
    import logging

    from engine.tfsetup import remove_temporary_files

    remove_temporary_files()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a terminal that went away
            pass
    os._exit(code)


def _main(argv: list[str]) -> int:
    if argv and argv[0] in COMMANDS:
        command = argv[0]
        parser = {"train": options.train_parser, "sample": options.sample_parser,
                  "watch": options.watch_parser,
                  "inspect": options.inspect_parser, "cells": options.cells_parser}[command]()
        args = parser.parse_args(argv[1:])
        handler = {"train": cmd_train, "sample": cmd_sample, "watch": cmd_watch,
                   "inspect": cmd_inspect, "cells": cmd_cells}[command]
    else:
        args = options.app_parser().parse_args(argv)
        handler = cmd_app
    try:
        return handler(args)
    except CharlmError as error:
        return _error(str(error))
    except ValueError as error:  # a setting that cannot work (config.validate)
        return _error(str(error), 2)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
