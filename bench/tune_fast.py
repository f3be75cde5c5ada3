"""Screen settings for the `fast` preset: held-out loss against training time.

Each candidate (`key=value,...` overrides of the fast preset) trains from scratch on the
first 90% of the corpus with our model and lazy windows, and is scored by the common
evaluator (bench/common.py) every `--eval-every` seconds of training. On a shared CPU
the wall clock is noisy, so each row also records the optimizer steps and a "clean"
seconds figure: steps x the 20th-percentile batch time (what the run would take
without other load), and candidates are best compared on that.

    .venv/bin/python bench/tune_fast.py --seconds 150 \
        --candidate maxlen=64,step=32,batch_size=128,lr=0.004 \
        --candidate maxlen=100,step=50,batch_size=128,lr=0.004
"""

from __future__ import annotations

import time

import numpy as np

import common as C


def parse_candidate(text: str) -> dict:
    types = {"maxlen": int, "step": int, "batch_size": int, "lr": float, "clipnorm": float,
             "dropout": float, "optimizer": str, "units": int, "layers": int,
             "schedule": str, "lr_floor": float, "decay_start": float, "warmup_steps": int,
             "patience": int, "seed": int, "epochs": int,
             "lr_end": float}  # lr_end: bench-only experiment, cosine decay lr -> lr_end over the budget
    out = {}
    for item in filter(None, text.split(",")):
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        out[key] = None if value == "none" and key == "clipnorm" else types[key](value)
    return out


def train_candidate(overrides: dict, train_ids, val_ids, vocab_size: int, seconds: float,
                    eval_every: float, clean: bool, seed: int = 1337) -> dict:
    """Train for `seconds` (clean seconds if `clean`), scoring every `eval_every`."""
    from engine.data.windows import Windows
    from engine.modeling.model import build_model

    k = C.keras()
    overrides = dict(overrides)
    lr_end = overrides.pop("lr_end", None)
    config = C.fast_config(seed=seed, **overrides)
    k.utils.set_random_seed(seed)
    model = build_model(vocab_size, config)
    windows = Windows(train_ids, config.maxlen, config.step, config.objective, config.batch_size, seed=seed)
    per_epoch = windows.batches_per_epoch
    durations: list[float] = []
    train_losses: list[float] = []  # running mean of each fit chunk, at its end

    class Timer(k.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.t = time.perf_counter()
            if lr_end is not None:  # cosine from config.lr to lr_end over the time budget
                done = min(1.0, (clean_seconds() if clean else wall) / seconds)
                lr = lr_end + 0.5 * (config.lr - lr_end) * (1 + np.cos(np.pi * done))
                self.model.optimizer.learning_rate.assign(lr)

        def on_train_batch_end(self, batch, logs=None):
            durations.append(time.perf_counter() - self.t)
            self.loss = float((logs or {}).get("loss", float("nan")))

        def on_train_end(self, logs=None):
            train_losses.append(self.loss)

    def clean_seconds() -> float:
        return len(durations) * float(np.percentile(durations, 20)) if durations else 0.0

    timer = Timer()
    # the first batch traces the graph: not training time
    model.fit(windows.dataset(0, 0, 1), epochs=1, verbose=0)
    step, wall, curve, next_eval = 1, 0.0, [], eval_every
    print(f"  {overrides}: {per_epoch} batches/epoch", flush=True)
    while True:
        elapsed = clean_seconds() if clean else wall
        if elapsed >= next_eval - 1e-9 or elapsed >= seconds:
            loss = C.heldout(model, vocab_size, val_ids)
            # the same evaluator on as much training text (the end of it): the generalisation gap
            seen = C.heldout(model, vocab_size, train_ids[-len(val_ids):])
            train = float(np.mean(train_losses[-3:])) if train_losses else float("nan")
            train_losses.clear()
            curve.append({"steps": step, "wall": round(wall, 2), "clean": round(clean_seconds(), 2),
                          "epochs": round(step / per_epoch, 3), "train": round(train, 4),
                          "train_eval": round(seen, 4), "heldout": round(loss, 4)})
            print(f"    step {step:6d}  wall {wall:7.1f}s  clean {clean_seconds():7.1f}s  "
                  f"epoch {step / per_epoch:5.2f}  train {train:.4f}  train-eval {seen:.4f}  "
                  f"heldout {loss:.4f}", flush=True)
            next_eval += eval_every
            if elapsed >= seconds:
                break
        # train in chunks of about 10 s (or to the next evaluation)
        median = float(np.median(durations[-50:])) if durations else 0.1
        target = min(next_eval, seconds) - elapsed
        chunk = max(1, int(min(target, 10.0) / max(median, 1e-3)))
        epoch, first = divmod(step, per_epoch)
        last = min(per_epoch, first + chunk)
        t = time.perf_counter()
        model.fit(windows.dataset(epoch, first, last), epochs=1, verbose=0, callbacks=[timer])
        wall += time.perf_counter() - t
        step += last - first
    ms = float(np.percentile(durations, 20)) * 1000
    return {"overrides": overrides | ({"lr_end": lr_end} if lr_end is not None else {}),
            "config": config.to_json(), "curve": curve,
            "batch_ms_p20": round(ms, 2), "batch_ms_median": round(float(np.median(durations)) * 1000, 2),
            "targets_per_s_p20": round(config.batch_size * config.targets_per_window / ms * 1000),
            "final": curve[-1]["heldout"]}


def main() -> None:
    p = C.parser(__doc__.split("\n\n")[0])
    p.add_argument("--candidate", action="append", default=[], help="key=value,... (repeatable)")
    p.add_argument("--seconds", type=float, default=150.0, help="training seconds per candidate")
    p.add_argument("--eval-every", type=float, default=50.0)
    p.add_argument("--wall", action="store_true", help="budget in wall seconds, not clean seconds")
    args = p.parse_args()
    if args.quick:
        args.seconds, args.eval_every = 20.0, 10.0
    candidates = [parse_candidate(c) for c in args.candidate] or [{}]
    corpus = C.load_corpus(args.corpus)
    train_ids, val_ids = C.split_ids(corpus)
    results = []
    for overrides in candidates:
        results.append(train_candidate(overrides, train_ids, val_ids, len(corpus.vocab), args.seconds,
                                       args.eval_every, clean=not args.wall))
    rows = [[r["overrides"], r["batch_ms_p20"], r["targets_per_s_p20"], r["curve"][-1]["steps"],
             r["curve"][-1]["epochs"], r["final"]] for r in results]
    print()
    print(C.table(rows, ["candidate", "ms/batch p20", "targets/s p20", "steps", "epochs",
                         f"heldout @{args.seconds:g}s"]))
    C.save("tune_fast", {"seconds": args.seconds, "clean": not args.wall, "environment": C.environment(),
                         "results": results}, args.out)


if __name__ == "__main__":
    main()
