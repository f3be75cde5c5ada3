"""The memorization check as `charlm-tui sample --json` reports it."""

from __future__ import annotations

from engine.data.trainingtext import training_text
from engine.errors import CorpusError
from engine.modeling.novelty import index_for


def memorization_report(saved, samples: dict[float, "str | list[str]"]) -> dict:
    """For `charlm-tui sample --json`: {"memorization": {temperature: Novelty.as_json()}}
    (a list of them where a temperature has a list of samples: --num-samples)
    when the run's very training text is on this machine (engine.data.trainingtext.training_text:
    its recorded path and fingerprint), else {"memorization_note": why not}."""
    corpus, why_not = training_text(saved)
    if corpus is None:
        return {"memorization_note": why_not}
    try:
        index = index_for(corpus)
    except CorpusError as error:
        return {"memorization_note": str(error)}
    return {"memorization": {str(t): [index.measure(one).as_json() for one in text] if isinstance(text, list)
                             else index.measure(text).as_json() for t, text in samples.items()}}
