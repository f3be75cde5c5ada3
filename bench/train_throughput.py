"""Training throughput: target chars/s of the book's recipe vs our `fast` preset.

Targets are the characters the loss scores: 1 per window for the book, every position
for ours. The book runs exactly as printed (one-hot bool x (N, 60, 57), Sequential
LSTM(128) + Dense softmax, RMSprop(learning_rate=0.01), categorical crossentropy, batch
128, model.fit on numpy arrays); ours runs our model through our lazy windows' tf.data
pipeline, as engine.run.training.Trainer does. Both warm up, then alternate rounds of
`--batches` batches; a batch's time is measured end to end (from the end of the batch
before: data loading included). Rates use each side's median batch time over all
rounds, and the ratio is also given per round (the CPU is shared: ratios of
neighbouring rounds are the robust figure).
"""

from __future__ import annotations

import statistics
import time

import common as C


def batch_timer(store: list, cpu_store: list | None = None):
    """Appends each batch's wall seconds to `store` (and the process's CPU seconds, all
    threads, to `cpu_store`): from the end of the previous batch to the end of this one."""
    k = C.keras()

    class Timer(k.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.last = None

        def on_train_batch_end(self, batch, logs=None):
            now, cpu = time.perf_counter(), time.process_time()
            if self.last is not None:   # the first batch of a fit call includes its start-up
                store.append(now - self.last[0])
                if cpu_store is not None:
                    cpu_store.append(cpu - self.last[1])
            self.last = (now, cpu)

    return Timer()


def main() -> None:
    p = C.parser("Training target-chars/s: the book vs the fast preset.")
    p.add_argument("--batches", type=int, default=20, help="batches per round and side")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--set", default="", metavar="KEY=VALUE,...",
                   help="override fast-preset settings (e.g. maxlen=32,batch_size=128) "
                        "to measure a candidate")
    args = p.parse_args()
    if args.quick:
        args.batches, args.rounds = 8, 2

    from engine.data.windows import Windows
    from engine.modeling.model import build_model

    C.keras()  # TensorFlow and Keras load here, before anything is built or timed
    corpus = C.load_corpus(args.corpus)
    text = C.book_text(C.corpus_path(args.corpus))
    chars = sorted(set(text))
    assert list(corpus.vocab) == chars, "our vocabulary differs from the book's"

    # The book: enough windows for one round (which batches does not matter for speed).
    need = (args.batches + 1) * C.BOOK_BATCH
    x, y, _, _ = C.book_vectorize(text[: need * C.BOOK_STEP + C.BOOK_MAXLEN], chars=chars)
    assert x.shape == (need, C.BOOK_MAXLEN, len(chars)) and x.dtype == bool
    book = C.book_model(len(chars))

    from tune_fast import parse_candidate

    config = C.fast_config(**parse_candidate(args.set))
    train_ids, _ = C.split_ids(corpus, config.val_fraction)
    ours = build_model(len(chars), config)
    windows = Windows(train_ids, config.maxlen, config.step, config.objective, config.batch_size,
                      seed=config.seed)
    per_epoch = windows.batches_per_epoch
    position = 0

    def run_book(times, cpu=None):
        book.fit(x, y, batch_size=C.BOOK_BATCH, epochs=1, verbose=0, callbacks=[batch_timer(times, cpu)])

    def run_ours(times, cpu=None):
        nonlocal position
        epoch, first = divmod(position, per_epoch)
        last = min(per_epoch, first + args.batches + 1)
        ours.fit(windows.dataset(epoch, first, last), epochs=1, verbose=0,
                 callbacks=[batch_timer(times, cpu)])
        position += last - first

    print(f"book: x {x.shape} bool, {book.count_params():,} parameters; ours: fast preset "
          f"maxlen {config.maxlen}, step {config.step}, batch {config.batch_size}, "
          f"{ours.count_params():,} parameters", flush=True)
    run_book([]), run_ours([])  # warm-up: tracing, first allocations
    book_times, our_times, book_cpu, our_cpu, rounds = [], [], [], [], []
    for r in range(args.rounds):
        b, o = [], []
        if r % 2:
            run_ours(o, our_cpu), run_book(b, book_cpu)
        else:
            run_book(b, book_cpu), run_ours(o, our_cpu)
        book_times += b
        our_times += o
        book_rate = C.BOOK_BATCH / statistics.median(b)
        our_rate = config.batch_size * config.targets_per_window / statistics.median(o)
        rounds.append({"book_targets_per_s": round(book_rate), "ours_targets_per_s": round(our_rate),
                       "ratio": round(our_rate / book_rate, 2)})
        print(f"  round {r + 1}: book {book_rate:8.0f}/s  ours {our_rate:9.0f}/s  "
              f"ratio {our_rate / book_rate:5.1f}x", flush=True)

    book_rate = C.BOOK_BATCH / statistics.median(book_times)
    our_rate = config.batch_size * config.targets_per_window / statistics.median(our_times)
    ratio = our_rate / book_rate
    median_round = statistics.median(r["ratio"] for r in rounds)
    per_batch = config.batch_size * config.targets_per_window
    cpu_ratio = (per_batch / statistics.median(our_cpu)) / (C.BOOK_BATCH / statistics.median(book_cpu))
    print()
    print(C.table([
        ["book (8.1)", f"{statistics.median(book_times) * 1000:.1f}", C.BOOK_BATCH,
         f"{book_rate:,.0f}", "1.0x"],
        [f"fast (maxlen {config.maxlen}, batch {config.batch_size})",
         f"{statistics.median(our_times) * 1000:.1f}",
         config.batch_size * config.targets_per_window, f"{our_rate:,.0f}", f"{ratio:.1f}x"],
    ], ["recipe", "ms/batch", "targets/batch", "targets/s", "vs book"]))
    print(f"median of per-round ratios: {median_round:.1f}x (goal >= 60x: "
          f"{'met' if median_round >= 60 else 'NOT met'}); by CPU seconds per batch "
          f"(less sensitive to other load): {cpu_ratio:.1f}x")
    C.save("train_throughput", {
        "environment": C.environment(), "batches_per_round": args.batches, "rounds": rounds,
        "book": {"ms_per_batch": statistics.median(book_times) * 1000, "targets_per_s": book_rate},
        "ours": {"config": config.to_json(), "ms_per_batch": statistics.median(our_times) * 1000,
                 "targets_per_s": our_rate},
        "ratio": ratio, "ratio_median_round": median_round, "ratio_cpu_time": cpu_ratio,
        "cpu_ms_per_batch": {"book": statistics.median(book_cpu) * 1000,
                             "ours": statistics.median(our_cpu) * 1000},
        "goal": 60, "met": median_round >= 60,
        "loadavg_end": list(__import__("os").getloadavg())}, args.out)


if __name__ == "__main__":
    main()
