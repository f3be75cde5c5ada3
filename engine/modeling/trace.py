"""The LSTM, step by step, over a text: every gate, cell and output, and the distribution.

The sampler needs only the state after each character; to see *why* the model writes
what it writes (issue 19: the inspector and the cells view, `charlm-tui inspect` and
`charlm-tui cells`) we keep everything. For each layer and each step t, after reading
text[t], Keras's LSTM computes

    i = sigmoid(z_i)   f = sigmoid(z_f)   g = tanh(z_g)   o = sigmoid(z_o)
    c[t] = f * c[t-1] + i * g          h[t] = o * tanh(c[t])

with z = x[t] @ kernel + h[t-1] @ recurrent_kernel + bias, and the Dense softmax over
h[t] of the last layer gives P(text[t+1] | text[:t+1]). `trace` runs exactly that, in
numpy, from the weights of a `Sampler` (a checkpoint's sidecar or a Keras model), so no
TensorFlow is needed and the figures are the sampler's own (tests/test_trace.py checks
them against Keras's per-step outputs).

Speed and memory: the input projection is outside the loop - for the first layer a
table of one row per character (one-hot @ kernel is a row of the kernel), for the others
one matrix product - and the loop is the recurrence, one small product and a few
in-place vector operations per step, all cells at once. What is kept per step is c,
tanh(c) and h (and the gates when asked): 10,000 characters through an LSTM(128) keep
31 MB, 72 MB with the gates (bench/trace_speed.py times it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.modeling.nextchar import NextChar
from engine.modeling.sampler import Sampler, encode, reweight_logits

ACTIVATIONS = ("c", "h")  # "c": tanh of the cell state, in [-1, 1] as the paper colours it; "h": the output


@dataclass(frozen=True)
class LayerTrace:
    """One LSTM layer over a text: row t of every array is the layer after reading text[t],
    one column per cell. The gates are None when the trace was asked not to keep them."""

    c: np.ndarray             # the cell state
    tanh_c: np.ndarray        # tanh(c): the cell's activation as the paper colours it
    h: np.ndarray             # the output, o * tanh(c)
    i: np.ndarray | None      # input gate
    f: np.ndarray | None      # forget gate
    g: np.ndarray | None      # cell input (the candidate written into c)
    o: np.ndarray | None      # output gate

    @property
    def units(self) -> int:
        return self.c.shape[1]

    @property
    def activations(self) -> dict[str, np.ndarray]:
        """{"c": tanh(c), "h": h}: what engine.modeling.cellstats.rank_cells correlates."""
        return {"c": self.tanh_c, "h": self.h}

    def activation(self, kind: str) -> np.ndarray:
        """(steps, units): "c" is tanh(c), "h" is h."""
        if kind not in ACTIVATIONS:
            raise ValueError(f"the activation is 'c' (tanh of the cell state) or 'h', not {kind!r}")
        return self.tanh_c if kind == "c" else self.h


@dataclass(frozen=True)
class Trace:
    """A model run over `text` (as the model reads it: lower-cased for a lower-cased run)."""

    text: str
    vocab: tuple[str, ...]
    layers: tuple[LayerTrace, ...]
    probabilities: np.ndarray | None  # (steps, vocab): row t is P(next char | text[:t+1]) at T=1

    def next_char(self, position: int):
        """The distribution the character at `position` was drawn from: P(. | text[:position]),
        1 <= position <= len(text) (the last one: the character after the whole text), as an
        engine.modeling.nextchar.NextChar."""
        if self.probabilities is None:
            raise ValueError("this trace was made without the output distribution")
        if not 1 <= position <= len(self.text):
            raise ValueError(f"position must be from 1 to {len(self.text)}, not {position}")
        return NextChar(self.text[:position], self.vocab, self.probabilities[position - 1])


def trace(sampler: Sampler, text: str, *, gates: bool = True, probabilities: bool = True,
          what: str = "the text") -> Trace:
    """Run the sampler's network over `text` from the zero state (as the sampler primes a
    seed), keeping every layer's c, tanh(c) and h per step, its gates if `gates`, and the
    output distribution per step if `probabilities`."""
    text, ids = encode(sampler, text, what)
    if not len(ids):
        raise ValueError(f"{what} is empty")
    weights = sampler.weights()
    layer_count = sum(1 for name in weights if name.endswith("_recurrent_kernel"))
    layers, inputs = [], None
    for number in range(1, layer_count + 1):
        kernel, recurrent, bias = (_rearranged(weights[f"lstm_{number}_{part}"])
                                   for part in ("kernel", "recurrent_kernel", "bias"))
        if inputs is None:  # one-hot @ kernel is a row of the kernel: a table, one row a step
            rows, row_of_step = kernel + bias, ids
        else:
            rows, row_of_step = inputs @ kernel, range(len(ids))
            rows += bias
        layer = _run_layer(rows, row_of_step, recurrent, gates)
        layers.append(layer)
        inputs = layer.h
    distributions = None
    if probabilities:
        distributions = reweight_logits(inputs @ weights["dense_kernel"] + weights["dense_bias"], 1.0)
    return Trace(text, tuple(sampler.vocab), tuple(layers), distributions)


def _rearranged(weights: np.ndarray) -> np.ndarray:
    """An LSTM weight's gate columns rearranged for `_run_layer`: Keras's order i, f, g, o
    becomes i, f, o, g (the three sigmoid gates one slice), and the sigmoid gates' columns
    are halved (a power of two: exact), since sigmoid(z) = (tanh(z / 2) + 1) / 2 - the
    sampler's formula - so that one tanh serves all four gates."""
    units = weights.shape[-1] // 4
    order = np.r_[0:2 * units, 3 * units:4 * units, 2 * units:3 * units]
    halve = np.r_[np.full(3 * units, 0.5), np.ones(units)]
    return np.ascontiguousarray(weights[..., order] * halve)


def _run_layer(rows: np.ndarray, row_of_step, recurrent: np.ndarray, keep_gates: bool) -> LayerTrace:
    """The recurrence of one layer, all cells at once, a few in-place operations a step.
    The input of step t, already projected (x @ kernel + bias, `_rearranged`), is
    rows[row_of_step[t]]; `recurrent` is rearranged too."""
    steps, units = len(row_of_step), recurrent.shape[0]
    c, tanh_c, h = (np.empty((steps, units)) for _ in range(3))
    activated = np.empty((steps if keep_gates else 1, 4 * units))
    sigmoid_part, g_part = slice(0, 3 * units), slice(3 * units, 4 * units)
    previous_c, previous_h = np.zeros(units), np.zeros(units)
    for t, row in enumerate(row_of_step):
        gate = activated[t if keep_gates else 0]
        np.matmul(previous_h, recurrent, out=gate)
        gate += rows[row]
        np.tanh(gate, out=gate)
        sigmoids = gate[sigmoid_part]
        sigmoids *= 0.5
        sigmoids += 0.5
        np.multiply(gate[units:2 * units], previous_c, out=c[t])               # f * c
        c[t] += gate[:units] * gate[g_part]                                     # + i * g
        np.tanh(c[t], out=tanh_c[t])
        np.multiply(gate[2 * units:3 * units], tanh_c[t], out=h[t])             # o * tanh(c)
        previous_c, previous_h = c[t], h[t]
    if not keep_gates:
        return LayerTrace(c, tanh_c, h, None, None, None, None)
    i, f, o, g = (activated[:, k * units:(k + 1) * units] for k in range(4))
    return LayerTrace(c, tanh_c, h, i, f, g, o)
