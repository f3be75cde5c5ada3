"""The next-character distribution, as the inspector and `charlm-tui inspect` show it.

The chapter's one idea: the model gives a probability distribution over the next
character, and the temperature reshapes it (the book's `reweight_distribution`). A
`NextChar` holds that distribution at T=1 - exactly what the sampler draws from, its
`Sampler.next_distribution` - and answers the questions a person asks of it: the top
characters at a temperature, the entropy in bits, where a given character ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.modeling.sampler import Sampler, encode, reweight_distribution


@dataclass(frozen=True)
class NextChar:
    """P(next character | context) over `vocab`, at temperature 1."""

    context: str
    vocab: tuple[str, ...]
    probabilities: np.ndarray

    def at(self, temperature: float) -> np.ndarray:
        """The distribution reweighted to `temperature` by the book's function (T=0: greedy);
        at T=1, the model's own probabilities, untouched."""
        if temperature == 1:
            return self.probabilities
        return reweight_distribution(self.probabilities, temperature)

    def top(self, count: int = 10, temperature: float = 1.0) -> list[tuple[str, float]]:
        """The `count` likeliest characters at `temperature`, likeliest first (ties: vocabulary order)."""
        probabilities = self.at(temperature)
        order = np.argsort(-probabilities, kind="stable")[:max(count, 0)]
        return [(self.vocab[index], float(probabilities[index])) for index in order]

    def entropy_bits(self, temperature: float = 1.0) -> float:
        """How uncertain the model is, in bits: 0 when one character is certain, log2(vocab) at most."""
        probabilities = self.at(temperature)
        positive = probabilities[probabilities > 0]
        return float(max(0.0, -(positive * np.log2(positive)).sum()))

    def rank(self, char: str, temperature: float = 1.0) -> tuple[int, float]:
        """(1-based rank, probability) of `char` at `temperature`: the inspector marks the
        character the sampler chose with these. Equal probabilities share the better rank."""
        probabilities = self.at(temperature)
        probability = probabilities[self.vocab.index(char)]
        return int((probabilities > probability).sum()) + 1, float(probability)


def next_char(sampler: Sampler, context: str, what: str = "the context") -> NextChar:
    """The distribution of the character after `context`, computed by the sampler itself
    (so it is what `sample` would draw from after that seed text). A ValueError in one
    sentence, naming `what`, for an empty context or characters the model does not know."""
    context, _ = encode(sampler, context, what)
    if not context:
        raise ValueError(f"{what} is empty: the model needs at least one character to go on")
    return NextChar(context, tuple(sampler.vocab), sampler.drawn_from(context))
