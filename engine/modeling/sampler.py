"""Sampling: the book's temperature reweighting, and a fast stateful sampler.

The book generates each character by running `model.predict` over the whole 60-char
window again. An LSTM does not need that: its state (h, c) after a prefix summarises
the prefix, so `Sampler` primes the state with the seed text once and then advances
one character per step, in numpy, for all temperatures at once as one batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from engine.config import MAX_SEED, TEMPERATURE_RULE, is_finite_number, valid_temperature


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _probabilities_to_logits(probabilities) -> np.ndarray:
    # log(0) is -inf: a char the model rules out stays ruled out at any temperature,
    # without the book's divide-by-zero warning and NaNs.
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(probabilities, dtype=np.float64))


def reweight_logits(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities of softmax(logits / temperature), computed safely; T=0 is argmax."""
    logits = np.asarray(logits, dtype=np.float64)
    if temperature <= 0:
        greedy = np.zeros_like(logits)
        np.put_along_axis(greedy, logits.argmax(axis=-1)[..., None], 1.0, axis=-1)
        return greedy
    return np.exp(_log_softmax(logits / temperature))


def reweight_distribution(original_distribution, temperature: float = 0.5) -> np.ndarray:
    """The book's function: the distribution reweighted to `temperature` (sums to 1)."""
    return reweight_logits(_probabilities_to_logits(original_distribution), temperature)


def sample(preds, temperature: float = 1.0, rng: np.random.Generator | None = None) -> int:
    """The book's function: draw one index from `preds` reweighted to `temperature`."""
    rng = rng or np.random.default_rng()
    probabilities = reweight_distribution(preds, temperature)
    return int(rng.choice(len(probabilities), p=probabilities))


def filter_logits(logits: np.ndarray, top_k: int | None = None, top_p: float | None = None) -> np.ndarray:
    """Set to -inf every logit outside the top k, and outside the smallest set whose
    probability reaches top_p (nucleus). Rows are independent; the best char always stays."""
    logits = np.array(logits, dtype=np.float64)
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = np.partition(logits, -top_k, axis=-1)[..., -top_k, None]
        logits[logits < kth] = -np.inf
    if top_p is not None and 0 < top_p < 1:
        order = np.argsort(-logits, axis=-1)
        sorted_probs = np.take_along_axis(np.exp(_log_softmax(logits)), order, axis=-1)
        before = np.cumsum(sorted_probs, axis=-1) - sorted_probs  # mass of better chars
        drop_sorted = before >= top_p
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        logits[drop] = -np.inf
    return logits


def _whole(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


# The sampling options as the command line spells them: (rule, what it must be). The
# engine refuses a value outside its rule from any front end, and the command line's
# argument types use the same rules, so nothing is accepted and then silently ignored.
SAMPLING_RULES = {
    "--top-k": (lambda k: _whole(k) and k >= 1, "a whole number of at least 1"),
    "--top-p": (lambda p: is_finite_number(p) and 0 < p <= 1, "a number above 0 and at most 1"),
    "--seed": (lambda s: _whole(s) and 0 <= s <= MAX_SEED, f"a whole number from 0 to {MAX_SEED}"),
    "--temperatures": (lambda t: is_finite_number(t) and valid_temperature(float(t)), TEMPERATURE_RULE),
    "--length": (lambda n: _whole(n) and n >= 0, "a whole number, 0 or more"),
}


def option_problem(option: str, value) -> str | None:
    """"must be ..." if `value` breaks the rule of the sampling option, else None."""
    holds, rule = SAMPLING_RULES[option]
    return None if holds(value) else f"must be {rule}"


def check_option(option: str, value) -> None:
    problem = option_problem(option, value)
    if problem:
        raise ValueError(f"{option} {problem}, not {value!r}")


@dataclass(frozen=True)
class _Lstm:
    kernel: np.ndarray            # (inputs, 4 * units), gates in Keras order i, f, c, o
    recurrent_kernel: np.ndarray  # (units, 4 * units)
    bias: np.ndarray              # (4 * units,)

    @property
    def units(self) -> int:
        return self.recurrent_kernel.shape[0]

    def step(self, x_projected: np.ndarray, h: np.ndarray, c: np.ndarray):
        z = x_projected + h @ self.recurrent_kernel + self.bias
        units = self.units  # the same four views np.split makes, without its cost per step
        i, f, g, o = (z[..., k * units:(k + 1) * units] for k in range(4))
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        return h, c


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # = 1 / (1 + exp(-x)), without overflow


# -- the weights a Sampler needs, by name (what engine/files/sidecar.py stores beside a checkpoint)
_LSTM_PARTS = ("kernel", "recurrent_kernel", "bias")


def weight_shapes(vocab_size: int, layers: int, units: int) -> dict[str, tuple[int, ...]]:
    """The name and shape of every array a Sampler of this model needs: the LSTMs'
    kernel, recurrent kernel and bias (lstm_1_kernel, ...), then dense_kernel, dense_bias."""
    shapes: dict[str, tuple[int, ...]] = {}
    inputs = vocab_size
    for number in range(1, layers + 1):
        shapes[f"lstm_{number}_kernel"] = (inputs, 4 * units)
        shapes[f"lstm_{number}_recurrent_kernel"] = (units, 4 * units)
        shapes[f"lstm_{number}_bias"] = (4 * units,)
        inputs = units
    shapes["dense_kernel"] = (inputs, vocab_size)
    shapes["dense_bias"] = (vocab_size,)
    return shapes


def keras_weights(model) -> dict[str, np.ndarray]:
    """The arrays a Sampler needs from a model built by `engine.modeling.model.build_model`, named
    as `weight_shapes` names them and exactly as Keras holds them (float32, not converted)."""
    weights: dict[str, np.ndarray] = {}
    lstm_count = 0
    for layer in model.layers:
        kind = type(layer).__name__
        values = layer.get_weights()
        if kind == "LSTM" and len(values) == len(_LSTM_PARTS):
            lstm_count += 1
            weights.update({f"lstm_{lstm_count}_{part}": np.asarray(value)
                            for part, value in zip(_LSTM_PARTS, values)})
        elif kind == "Dense" and len(values) == 2:
            weights["dense_kernel"], weights["dense_bias"] = (np.asarray(value) for value in values)
    if not lstm_count or "dense_kernel" not in weights:
        raise ValueError("the model has no LSTM or no Dense layer: not a charlm-tui model")
    return weights


def reading_for(config) -> tuple[int, int] | None:
    """How a run's sampler reads the stream it generates: (window, every) or None.

    A model trained on every position of short windows, each from a zero state (the fast
    objective), predicts best from the lengths it was trained on. Run on with its state
    carried far past them it predicts worse where the text has a shape it could learn in
    a window (on the play of bench/structure.py, 0.92 nats a character against 0.80 read
    16 at a time, and lines twice the text's) and no better where it has none (Nietzsche,
    where the carried state is the same as the last 32 characters' to 4 places: README,
    "Structure"). So such a sampler starts again from a zero state over the last `maxlen`
    characters every `maxlen // 2` characters it draws: each character is drawn from
    `maxlen` to 1.5 x `maxlen` - 1 characters read, at three LSTM steps a character.
    None, the book's objective (the last position only): the state carried, as before."""
    if getattr(config, "objective", "all") != "all":
        return None
    return config.maxlen, max(1, config.maxlen // 2)


class Sampler:
    """Next-character distributions and text from a trained model's weights, in numpy.

    `reading` (see `reading_for`): None, the state carried through the whole stream; or
    (window, every): generation starts again from a zero state over the last `window`
    characters every `every` characters. Scoring (`next_distribution`, `log_likelihoods`)
    always carries the state over all it is given: it is the model's own figure."""

    def __init__(self, vocab: Sequence[str], lstms: list[_Lstm], dense_kernel: np.ndarray,
                 dense_bias: np.ndarray, lowercase: bool = True, reading: tuple[int, int] | None = None):
        weights = [w for lstm in lstms for w in (lstm.kernel, lstm.recurrent_kernel, lstm.bias)]
        if not all(np.isfinite(w).all() for w in [*weights, dense_kernel, dense_bias]):
            # Such a model samples the same character forever (NaN wins every argmax).
            raise ValueError("the model holds NaN or infinite weights: it is broken (its training diverged); "
                             "train it again with --fresh or a lower --lr")
        self.vocab = tuple(vocab)
        self.lowercase = lowercase
        self._index = {ch: i for i, ch in enumerate(self.vocab)}
        self._lstms = lstms
        self._dense_kernel = dense_kernel
        self._dense_bias = dense_bias
        if reading is not None and not (reading[0] >= 1 and reading[1] >= 1):
            raise ValueError(f"a reading window and interval must be at least 1, not {reading}")
        self.reading = reading
        self.source = None   # the checkpoint file the weights came from, when loaded from one
        self._primed = None  # (seed text, logits, state) of the last prime: reused, never changed

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_keras_model(cls, model, vocab: Sequence[str], lowercase: bool = True,
                         reading: tuple[int, int] | None = None) -> "Sampler":
        """Copy the weights out of a model built by `engine.modeling.model.build_model`."""
        lstms, dense = [], None
        for layer in model.layers:
            kind = type(layer).__name__
            if kind == "LSTM":
                kernel, recurrent, bias = (np.asarray(w, dtype=np.float64) for w in layer.get_weights())
                lstms.append(_Lstm(kernel, recurrent, bias))
            elif kind == "Dense":
                dense = [np.asarray(w, dtype=np.float64) for w in layer.get_weights()]
        if not lstms or dense is None:
            raise ValueError("the model has no LSTM or no Dense layer: not a charlm-tui model")
        if lstms[0].kernel.shape[0] != len(vocab) or dense[0].shape[1] != len(vocab):
            raise ValueError(f"the model's vocabulary size does not match the {len(vocab)} saved characters")
        return cls(vocab, lstms, dense[0], dense[1], lowercase=lowercase, reading=reading)

    @classmethod
    def from_weights(cls, vocab: Sequence[str], weights: Mapping[str, np.ndarray],
                     lowercase: bool = True, reading: tuple[int, int] | None = None) -> "Sampler":
        """From arrays named as `keras_weights` names them (a checkpoint's sidecar). They
        are converted to float64 as `from_keras_model` converts Keras's, so both give
        bit-identical probabilities for the same weights."""
        layers = sum(1 for name in weights if name.endswith("_recurrent_kernel"))
        first_recurrent = np.shape(weights.get("lstm_1_recurrent_kernel", ()))
        units = first_recurrent[0] if len(first_recurrent) == 2 else 0
        expected = weight_shapes(len(vocab), layers, units)
        actual = {name: tuple(np.shape(array)) for name, array in weights.items()}
        if not layers or actual != expected:
            raise ValueError(f"the weights do not make an LSTM model of the {len(vocab)} saved characters")
        as_float64 = {name: np.asarray(array, dtype=np.float64) for name, array in weights.items()}
        lstms = [_Lstm(*(as_float64[f"lstm_{number}_{part}"] for part in _LSTM_PARTS))
                 for number in range(1, layers + 1)]
        return cls(vocab, lstms, as_float64["dense_kernel"], as_float64["dense_bias"], lowercase=lowercase,
                   reading=reading)

    def weights(self) -> dict[str, np.ndarray]:
        """The float64 arrays this sampler computes with, named as `weight_shapes` names them,
        as read-only views: engine/modeling/trace.py runs the same network over a text, step by step."""
        arrays = {"dense_kernel": self._dense_kernel, "dense_bias": self._dense_bias}
        for number, lstm in enumerate(self._lstms, 1):
            arrays.update({f"lstm_{number}_{part}": getattr(lstm, part) for part in _LSTM_PARTS})
        views = {}
        for name, array in arrays.items():
            views[name] = array.view()
            views[name].flags.writeable = False
        return views

    # -- the recurrent core ----------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        if self.lowercase:
            text = text.lower()
        unknown = sorted({ch for ch in text if ch not in self._index})
        if unknown:
            shown = ", ".join(repr(ch) for ch in unknown[:8])
            raise ValueError(f"seed text has characters the model does not know: {shown}")
        return [self._index[ch] for ch in text]

    def _zero_state(self, rows: int):
        return [(np.zeros((rows, lstm.units)), np.zeros((rows, lstm.units))) for lstm in self._lstms]

    def _advance(self, ids: np.ndarray, state):
        """Feed one char id per row; return the next-char logits and the new state."""
        x = self._lstms[0].kernel[ids]  # one-hot @ kernel is a row lookup
        new_state = []
        for layer_index, (lstm, (h, c)) in enumerate(zip(self._lstms, state)):
            if layer_index:
                x = x @ lstm.kernel
            h, c = lstm.step(x, h, c)
            new_state.append((h, c))
            x = h
        logits = x @ self._dense_kernel + self._dense_bias
        return logits, new_state

    def prime(self, seed_text: str):
        """Run the seed text through the LSTM once: (logits after it, state). The last
        seed's answer is kept, so samples after samples from one seed (`--num-samples`, a
        100,000-character --seed-file) prime once; callers copy it, never change it."""
        primed = self._primed
        if primed is not None and primed[0] == seed_text:
            return primed[1], primed[2]
        ids = self.encode(seed_text)
        if not ids:
            raise ValueError("the seed text is empty")
        state = self._zero_state(1)
        for char_id in ids:
            logits, state = self._advance(np.array([char_id]), state)
        self._primed = (seed_text, logits[0], state)
        return logits[0], state

    def next_distribution(self, prefix: str) -> np.ndarray:
        """P(next char | prefix) at temperature 1, as the Keras model computes it."""
        logits, _ = self.prime(prefix)
        return np.exp(_log_softmax(logits))

    def drawn_from(self, seed_text: str, generated: str = "") -> np.ndarray:
        """The distribution (at temperature 1) a stream started from `seed_text` draws its
        next character from once it has drawn `generated`: the model's after all of it, or,
        read in windows, after the part the stream has read since its last restart."""
        text = seed_text + generated
        if self.reading is None:
            return self.next_distribution(text)
        window, every = self.reading
        return self.next_distribution(text[-(window + len(generated) % every):])

    # -- generation ------------------------------------------------------------------
    def stream(self, seed_text: str, temperatures: Sequence[float], length: int, *,
               seed: int | None = None, top_k: int | None = None, top_p: float | None = None,
               distributions: list | None = None) -> Iterator[tuple[tuple[str, ...], tuple[float, ...]]]:
        """Yield `length` steps; each step is one char per temperature and the
        probability the model (at temperature 1) gave each chosen char. Options outside
        their rules (SAMPLING_RULES) raise ValueError here, before anything is generated.
        `distributions`: a list that gets, before each step is yielded, the model's whole
        distribution at temperature 1 for every temperature's row (rows x vocab) that the
        step drew from: what the inspector shows, with no second pass over the text."""
        check_option("--length", length)
        if not temperatures:
            raise ValueError("give at least one temperature")
        for temperature in temperatures:
            check_option("--temperatures", temperature)
        for option, value in (("--seed", seed), ("--top-k", top_k), ("--top-p", top_p)):
            if value is not None:
                check_option(option, value)
        return self._stream(seed_text, temperatures, length, seed, top_k, top_p, distributions)

    def _read(self, ids: np.ndarray):
        """(logits, state) after reading `ids` (rows x T) from a zero state."""
        state = self._zero_state(ids.shape[0])
        for t in range(ids.shape[1]):
            logits, state = self._advance(ids[:, t], state)
        return logits, state

    def _stream(self, seed_text, temperatures, length, seed, top_k, top_p, distributions):
        rng = np.random.default_rng(seed)
        temperatures = [float(t) for t in temperatures]
        rows = len(temperatures)
        if self.reading is None:
            logits, state = self.prime(seed_text)
            logits = np.repeat(logits[None, :], rows, axis=0)
            state = [(np.repeat(h, rows, axis=0), np.repeat(c, rows, axis=0)) for h, c in state]
        else:  # each row's last `window` characters, read again every `every` drawn
            window, every = self.reading
            ids = self.encode(seed_text)
            if not ids:
                raise ValueError("the seed text is empty")
            recent = np.repeat(np.array(ids[-window:])[None, :], rows, axis=0)
            logits, state = self._read(recent)
        row_index = np.arange(rows)
        inverse_t = np.array([1.0 / t if t > 0 else 0.0 for t in temperatures])[:, None]
        greedy = np.array([t <= 0 for t in temperatures])
        for drawn in range(1, length + 1):
            model_probs = np.exp(_log_softmax(logits))
            if distributions is not None:
                distributions.append(model_probs)  # (a new array each step)
            scaled = filter_logits(logits * np.where(greedy[:, None], 1.0, inverse_t), top_k, top_p)
            probs = np.exp(_log_softmax(scaled))
            cumulative = np.cumsum(probs, axis=-1)
            draws = rng.random(rows)[:, None] * cumulative[:, -1:]
            chosen = np.minimum((cumulative <= draws).sum(axis=-1), len(self.vocab) - 1)
            chosen = np.where(greedy, scaled.argmax(axis=-1), chosen)
            yield (tuple(self.vocab[i] for i in chosen),
                   tuple(float(p) for p in model_probs[row_index, chosen]))
            if self.reading is not None:
                recent = np.concatenate([recent, chosen[:, None]], axis=1)[:, -window:]
                if drawn % every == 0:
                    logits, state = self._read(recent)
                    continue
            logits, state = self._advance(chosen, state)

    def generate(self, seed_text: str, temperatures: Sequence[float], length: int,
                 **options) -> dict[float, str]:
        """The generated text (without the seed) for each temperature."""
        columns: list[list[str]] = [[] for _ in temperatures]
        for chars, _ in self.stream(seed_text, temperatures, length, **options):
            for column, ch in zip(columns, chars):
                column.append(ch)
        return {float(t): "".join(column) for t, column in zip(temperatures, columns)}

    # -- scoring ---------------------------------------------------------------------
    def log_likelihoods(self, ids: np.ndarray) -> np.ndarray:
        """log P(ids[:, t + 1] | ids[:, :t + 1]) in nats for every row of `ids` (rows x T),
        the state carried from a zero state at each row's start through all of it: what
        the model gives each next character after everything before it, as it samples."""
        ids = np.asarray(ids)
        state = self._zero_state(ids.shape[0])
        rows = np.arange(ids.shape[0])
        scores = np.empty((ids.shape[0], max(0, ids.shape[1] - 1)))
        for t in range(ids.shape[1] - 1):
            logits, state = self._advance(ids[:, t], state)
            scores[:, t] = _log_softmax(logits)[rows, ids[:, t + 1]]
        return scores

def encode(sampler: Sampler, text: str, what: str = "the text") -> tuple[str, np.ndarray]:
    """(the text as the model reads it, its character ids); a ValueError naming the
    characters the model does not know (`what` says whose they are, e.g. "--text")."""
    if sampler.lowercase:
        text = text.lower()
    index = {char: number for number, char in enumerate(sampler.vocab)}
    unknown = sorted({char for char in text if char not in index})
    if unknown:
        shown = ", ".join(repr(char) for char in unknown[:8])
        more = f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
        raise ValueError(f"{what} has characters the model does not know: {shown}{more}")
    return text, np.fromiter((index[char] for char in text), dtype=np.intp, count=len(text))
