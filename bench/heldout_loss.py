"""Held-out loss after a fixed CPU training time: the book's recipe vs our `fast` preset.

Both train on the first 90% of the corpus only and are scored by the same evaluator on
the last 10% (bench/common.py: every held-out char predicted from 50-59 chars of
context, engine.modeling.model.heldout_loss). The book trains exactly as printed (vectorised
one-hot arrays, model.fit, batch 128, RMSprop 0.01) for `--book-seconds`; ours trains
through our real engine.run.training.Trainer, a fresh run for `--book-seconds` (ours at the
book's budget) and another for `--fast-seconds`, each with that `--time-budget`, as a
user would run it: the run ends at its budget or its epochs (the preset's 25), whichever
comes first, and the learning rate decays to that end.
Training time is what each loop's clock counts (the Trainer's includes its own
per-epoch evaluation and checkpoints); vectorising and scoring are not counted.

Beside that windowed figure, each model gets a long-context one (engine/modeling/longcontext.py):
every held-out char predicted from at least 200 chars before it, the LSTM state carried
through the text as the sampler carries it. A model that uses long-range structure
scores lower there than in windows; one whose state drifts past its training lengths,
higher. A third figure is what the streams get: each held-out char as our sampler reads the
text it generates, from its last `maxlen` to 1.5 x `maxlen` - 1 characters
(engine.modeling.sampler.reading_for; the book's sampler carries its state).

`--against SETTINGS` trains a reference beside ours at the same budgets (e.g.
`--against patience=0`: the preset before its early stop), the two alternating over
`--rounds` (the reference first in odd rounds), so a change to the preset is measured
side by side with what it replaces, on the same machine at the same time. Round N trains
both with seed `--seed` + N - 1 (unless the settings give one): the same seed trains the
same run again, figure for figure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import common as C
from tune_fast import parse_candidate


def train_book(text: str, chars, seconds: float, seed: int):
    k = C.keras()
    k.utils.set_random_seed(seed)
    t = time.perf_counter()
    x, y, _, _ = C.book_vectorize(text, chars=chars)
    vectorise = time.perf_counter() - t
    model = C.book_model(len(chars))
    budget = C.TimeBudget(seconds)
    # the book's loop is `model.fit(x, y, batch_size=128, epochs=1)` per epoch; one call
    # with many epochs trains the same (and sampling between epochs is not training)
    model.fit(x, y, batch_size=C.BOOK_BATCH, epochs=10_000, verbose=0, callbacks=[budget])
    return model, {"seconds": budget.elapsed, "batches": budget.batches,
                   "epochs": budget.batches / -(-len(x) // C.BOOK_BATCH),
                   "windows": len(x), "vectorise_seconds": vectorise}


def long_context(model, chars, val_ids, config=None) -> tuple[float, float | None]:
    """Held-out nats/char with 200+ chars of context, the state carried, and as the run's
    sampler reads the stream it generates (None for the book's, which carries its state)."""
    from engine.modeling.longcontext import as_read_loss, long_context_loss
    from engine.modeling.sampler import Sampler, reading_for

    sampler = Sampler.from_keras_model(model, chars, reading=reading_for(config) if config else None)
    return long_context_loss(sampler, val_ids), as_read_loss(sampler, val_ids)


def train_ours(corpus, run_dir: str, seconds: float, fresh: bool, overrides: dict):
    from engine.run.training import Trainer

    # As a user's `train --time-budget SECONDS`: the run ends at its budget or at its epochs
    # (the preset's 25, or the settings'), whichever comes first; epochs=100000 makes the
    # budget the run's length.
    config = C.fast_config(time_budget=seconds, **overrides)
    trainer = Trainer(corpus, config, run_dir, fresh=fresh, sample_each_epoch=False)
    finished = trainer.run()
    return trainer.model, config, finished


def train_and_score(corpus, run_dir: str, budget: float, overrides: dict, chars, val_ids) -> dict:
    """A fresh run of ours for `budget` seconds, scored both ways on the held-out text."""
    model, config, finished = train_ours(corpus, run_dir, budget, fresh=True, overrides=overrides)
    loss = C.heldout(model, len(chars), val_ids)
    long_loss, read_loss = long_context(model, chars, val_ids, config)
    print(f"  steps {finished.step}, {finished.elapsed:.0f} s ({finished.reason}), held-out "
          f"{loss:.4f}, long-context {long_loss:.4f}, as the sampler reads {read_loss:.4f} "
          f"(Trainer's own val {finished.val_loss})", flush=True)
    targets = finished.step * config.batch_size * config.targets_per_window
    return {"budget": budget, "seconds": finished.elapsed, "steps": finished.step, "epochs": finished.epoch,
            "reason": finished.reason, "targets": targets,
            "trainer_val_loss": finished.val_loss, "heldout": loss, "heldout_long": long_loss,
            "heldout_as_read": read_loss, "config": config.to_json()}


def main() -> None:
    p = C.parser("Held-out nats/char after a CPU time budget: the book vs the fast preset.")
    p.add_argument("--book-seconds", type=float, default=120.0)
    p.add_argument("--fast-seconds", type=float, default=600.0)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--skip-book", action="store_true", help="train only ours")
    p.add_argument("--keep", action="store_true",
                   help="keep our runs (their metrics.jsonl has every epoch's held-out loss)")
    p.add_argument("--set", default="", metavar="KEY=VALUE,...",
                   help="override fast-preset settings (e.g. maxlen=32,lr=0.008) to try a candidate")
    p.add_argument("--against", default=None, metavar="KEY=VALUE,...",
                   help="also train this reference (the fast preset with these settings, e.g. patience=0 "
                        "for the preset before its early stop) at the same budgets, alternating with ours "
                        "(the reference first in odd rounds)")
    p.add_argument("--rounds", type=int, default=1, help="rounds of ours and --against (1)")
    args = p.parse_args()
    if args.quick:
        args.book_seconds, args.fast_seconds = 15.0, 30.0

    corpus = C.load_corpus(args.corpus)
    text = C.book_text(C.corpus_path(args.corpus))
    chars = sorted(set(text))
    assert list(corpus.vocab) == chars and len(text) == len(corpus), "corpus differs from the book's text"
    train_ids, val_ids = C.split_ids(corpus)
    split = len(train_ids)
    vocab = len(chars)
    print(f"{corpus.name}: {len(corpus):,} chars; training on the first {split:,}, held out "
          f"{len(val_ids):,}; the evaluator scores every held-out char from "
          f"{C.EVAL_CONTEXT}-{C.EVAL_MAXLEN - 1} chars of context", flush=True)
    rows, result = [], {"environment": C.environment(), "train_chars": split, "heldout_chars": len(val_ids),
                        "evaluator": {"maxlen": C.EVAL_MAXLEN, "step": C.EVAL_STEP,
                                      "min_context": C.EVAL_CONTEXT}}

    if not args.skip_book:
        print(f"book: vectorising and training {args.book_seconds:g} s ...", flush=True)
        model, info = train_book(text[:split], chars, args.book_seconds, args.seed)
        info["heldout"] = C.heldout(model, vocab, val_ids)
        info["heldout_long"], _ = long_context(model, chars, val_ids)
        del model
        result["book"] = info
        rows.append(["book (8.1)", f"{info['seconds']:.0f}", info["batches"], f"{info['epochs']:.2f}",
                     f"{info['batches'] * C.BOOK_BATCH:,}", f"{info['heldout']:.4f}",
                     f"{info['heldout_long']:.4f}", "(carried)"])
        print(f"  {info}", flush=True)

    # (not tempfile.gettempdir(): the engine points it at a folder of its own, gone at exit)
    work = tempfile.mkdtemp(prefix="charlm-bench-", dir=os.environ.get("TMPDIR") or "/tmp")
    try:
        result["ours"], result["against"] = [], []
        candidates = [("ours", "fast", args.set)]
        if args.against is not None:
            candidates.append(("against", f"--against {args.against}", args.against))
        for round_ in range(1, args.rounds + 1):
            order = candidates if round_ % 2 == 0 or len(candidates) == 1 else candidates[::-1]
            for budget in sorted({min(args.book_seconds, args.fast_seconds), args.fast_seconds}):
                for key, label, settings in order:
                    print(f"{label}: a fresh run of {budget:g} s (round {round_}) ...", flush=True)
                    # each round its own seed (the same for ours and the reference): with one
                    # seed the rounds would train the same runs again
                    overrides = {"seed": args.seed + round_ - 1, **parse_candidate(settings)}
                    info = train_and_score(corpus, os.path.join(work, f"{key}-{budget:g}-{round_}"), budget,
                                           overrides, chars, val_ids)
                    result[key].append({"round": round_, **info})
                    rows.append([f"{label} @ {budget:g} s", f"{info['seconds']:.0f}", info["steps"],
                                 f"{info['epochs']}", f"{info['targets']:,}", f"{info['heldout']:.4f}",
                                 f"{info['heldout_long']:.4f}", f"{info['heldout_as_read']:.4f}"])
    finally:
        if args.keep:
            print(f"our runs: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print(C.table(rows, ["recipe", "train s", "steps", "epochs", "targets", "held-out nats/char",
                         "200+ context, carried", "as the sampler reads"]))
    if "book" in result:
        book = result["book"]["heldout"]
        at_book = result["ours"][0]["heldout"]
        final = result["ours"][-1]["heldout"]
        result["summary"] = {"book": book, "ours_at_book_budget": at_book, "ours_final": final,
                             "goal_final": 1.35, "met": final <= 1.35}
        print(f"book {book:.4f} @ {args.book_seconds:g} s; ours {at_book:.4f} @ {args.book_seconds:g} s, "
              f"{final:.4f} @ {args.fast_seconds:g} s "
              f"(goal <= 1.35: {'met' if final <= 1.35 else 'NOT met'})")
    result["loadavg_end"] = list(os.getloadavg())
    result.update({"book_seconds": args.book_seconds, "fast_seconds": args.fast_seconds})
    C.save("heldout_loss", result, args.out)


if __name__ == "__main__":
    main()
