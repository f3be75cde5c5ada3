"""Generation speed: the book's loop vs our stateful numpy Sampler, same weights.

The book, per generated char: one-hot the last 60 chars, `model.predict(x, verbose=0)`,
its `sample`, one temperature at a time. Ours: `Sampler.stream` with the book's 4
temperatures at once (one batch of 4 rows), reading as a run of the fast preset reads
(engine.modeling.sampler.reading_for: every 8 chars it reads the last 16 again from a zero
state, three LSTM steps a char); beside it, the state carried (one step a char), as for
a run of the book preset.
Rates: the book's chars/s (one stream); ours per stream (steps/s) and over the 4
streams together (4 * steps/s, the chars it delivers per second). Rounds alternate.
The weights are a freshly initialised book model copied into ours (speed does not
depend on training).
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

import common as C

TEMPERATURES = (0.2, 0.5, 1.0, 1.2)


def book_generate(model, generated_text: str, chars, char_indices, length: int, temperature: float) -> str:
    """The book's generation loop, verbatim (less the printing)."""
    maxlen = C.BOOK_MAXLEN
    out = []
    for i in range(length):
        sampled = np.zeros((1, maxlen, len(chars)))
        for t, char in enumerate(generated_text):
            sampled[0, t, char_indices[char]] = 1.
        preds = model.predict(sampled, verbose=0)[0]
        next_index = C.book_sample(preds, temperature)
        next_char = chars[next_index]
        generated_text += next_char
        generated_text = generated_text[1:]
        out.append(next_char)
    return "".join(out)


def main() -> None:
    p = C.parser("Generation chars/s: the book's predict loop vs our Sampler.")
    p.add_argument("--book-chars", type=int, default=100, help="chars per book round")
    p.add_argument("--steps", type=int, default=20_000, help="Sampler steps per round")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    if args.quick:
        args.book_chars, args.steps, args.rounds = 20, 2_000, 1

    from engine.config import preset
    from engine.modeling.sampler import Sampler, reading_for

    text = C.book_text(C.corpus_path(args.corpus))
    chars = sorted(set(text))
    char_indices = dict((char, chars.index(char)) for char in chars)
    C.keras().utils.set_random_seed(1)
    book = C.book_model(len(chars))
    scoring = C.scoring_model(book, len(chars))
    sampler = Sampler.from_keras_model(scoring, chars, reading=reading_for(preset("fast")))
    carried = Sampler.from_keras_model(scoring, chars)
    seed_text = text[1000:1000 + C.BOOK_MAXLEN]

    # warm-up: predict's first call traces; the sampler's first call allocates
    book_generate(book, seed_text, chars, char_indices, 3, 0.5)
    for warming in (sampler, carried):
        list(warming.stream(seed_text, TEMPERATURES, 10, seed=0))

    rounds = []
    for r in range(args.rounds):
        t = time.perf_counter()
        for j, temperature in enumerate(TEMPERATURES):  # the book's temperatures in turn
            book_generate(book, seed_text, chars, char_indices, args.book_chars // len(TEMPERATURES)
                          + (j < args.book_chars % len(TEMPERATURES)), temperature)
        book_rate = args.book_chars / (time.perf_counter() - t)
        t = time.perf_counter()
        for _ in sampler.stream(seed_text, TEMPERATURES, args.steps, seed=r):
            pass
        steps_rate = args.steps / (time.perf_counter() - t)
        t = time.perf_counter()
        for _ in carried.stream(seed_text, TEMPERATURES, args.steps, seed=r):
            pass
        carried_rate = args.steps / (time.perf_counter() - t)
        rounds.append({"book_chars_per_s": book_rate, "ours_steps_per_s": steps_rate,
                       "ours_chars_per_s": steps_rate * len(TEMPERATURES),
                       "carried_steps_per_s": carried_rate})
        print(f"  round {r + 1}: book {book_rate:6.1f} chars/s; ours {steps_rate:8.0f} steps/s per "
              f"stream, {steps_rate * len(TEMPERATURES):8.0f} chars/s over {len(TEMPERATURES)} streams "
              f"(the state carried: {carried_rate:8.0f} steps/s)", flush=True)

    book_rate = statistics.median(r["book_chars_per_s"] for r in rounds)
    steps_rate = statistics.median(r["ours_steps_per_s"] for r in rounds)
    carried_rate = statistics.median(r["carried_steps_per_s"] for r in rounds)
    total = steps_rate * len(TEMPERATURES)
    print()
    print(C.table([
        ["book (predict per char)", 1, f"{book_rate:,.1f}", f"{book_rate:,.1f}", "1x"],
        [f"Sampler.stream ({len(TEMPERATURES)} temperatures)", len(TEMPERATURES), f"{steps_rate:,.0f}",
         f"{total:,.0f}", f"{total / book_rate:,.0f}x ({steps_rate / book_rate:,.0f}x per stream)"],
        ["the same, the state carried (book runs)", len(TEMPERATURES), f"{carried_rate:,.0f}",
         f"{carried_rate * len(TEMPERATURES):,.0f}", f"{carried_rate * len(TEMPERATURES) / book_rate:,.0f}x"],
    ], ["generator", "streams", "chars/s per stream", "chars/s total", "vs book"]))
    ratio = total / book_rate
    print(f"goal >= 500x (chars/s, 4 streams together): {'met' if ratio >= 500 else 'NOT met'}; "
          f"per stream alone: {steps_rate / book_rate:,.0f}x")
    C.save("sampler_speed", {
        "environment": C.environment(), "temperatures": list(TEMPERATURES), "book_chars": args.book_chars,
        "steps": args.steps, "rounds": rounds, "book_chars_per_s": book_rate,
        "ours_steps_per_s": steps_rate, "ours_chars_per_s": total, "ratio": ratio,
        "carried_steps_per_s": carried_rate,
        "ratio_per_stream": steps_rate / book_rate, "goal": 500, "met": ratio >= 500,
        "loadavg_end": list(os.getloadavg())}, args.out)


if __name__ == "__main__":
    main()
