"""GPU check, for a machine with a GPU: is the cuDNN LSTM kernel used, and how fast is it?

    python bench/gpu_check.py [--corpus PATH] [--fast-steps 300]
    (the corpus by default: $CHARLM_BENCH_CORPUS, else nietzsche)

1. Traces the training step of the default (fast) model and looks for TensorFlow's
   CudnnRNN op in the graph: Keras uses cuDNN only when the LSTM's settings allow it.
2. Times one epoch of the book recipe (--preset book) end to end through our Trainer.
3. Measures the fast preset's target chars/s over --fast-steps steps.
Writes bench/results/gpu_check.json and prints a line for the README.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import events  # noqa: E402
from engine.config import preset  # noqa: E402
from engine.data.corpus import load_corpus  # noqa: E402
from engine.run.training import Trainer  # noqa: E402
from engine.tfsetup import device_name, tensorflow  # noqa: E402


def cudnn_ops(model, maxlen: int) -> list[str]:
    """The CudnnRNN* op types in the traced forward pass of `model` (its graph and the
    functions it calls): present only when Keras chose the cuDNN kernel."""
    tf = tensorflow()
    concrete = tf.function(lambda inputs: model(inputs, training=True)).get_concrete_function(
        tf.TensorSpec((None, maxlen), tf.int32))
    graph_def = concrete.graph.as_graph_def()
    ops = {node.op for node in graph_def.node}
    ops |= {node.op for function in graph_def.library.function for node in function.node_def}
    return sorted(op for op in ops if "CudnnRNN" in op)


def timed_run(corpus, config, run_dir) -> tuple[events.TrainingFinished, float]:
    started = time.perf_counter()
    finished = Trainer(corpus, config, run_dir, fresh=True, sample_each_epoch=False).run()
    return finished, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=os.environ.get("CHARLM_BENCH_CORPUS") or "nietzsche")
    parser.add_argument("--fast-steps", type=int, default=300)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu_check.json"))
    args = parser.parse_args()

    try:
        tf = tensorflow()
    except ImportError as error:
        print(f"TensorFlow cannot be imported here ({error}): install the project's packages first "
              "(pip install -e . in the checkout)")
        return 2
    if not tf.config.list_physical_devices("GPU"):
        print("no GPU visible to TensorFlow: nothing to check here")
        return 2
    corpus = load_corpus(args.corpus)
    result = {"device": device_name(), "corpus": corpus.name, "tensorflow": tf.__version__}
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(corpus, preset("fast", steps=1, sample_length=0), Path(scratch) / "probe")
        trainer.run()
        result["cudnn_ops"] = cudnn_ops(trainer.model, trainer.config.maxlen)
        book, book_seconds = timed_run(corpus, preset("book", epochs=1, sample_length=0),
                                       Path(scratch) / "book")
        result["book_epoch_seconds"] = round(book_seconds, 1)
        result["book_val_loss"] = book.val_loss
        fast, _ = timed_run(corpus, preset("fast", steps=args.fast_steps, sample_length=0),
                            Path(scratch) / "fast")
        result["fast_chars_per_sec"] = round(fast.chars_per_sec)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"| {result['device']} | cuDNN: {', '.join(result['cudnn_ops']) or 'NOT USED'} | book epoch "
          f"{result['book_epoch_seconds']} s | fast {result['fast_chars_per_sec']:,} target chars/s |")
    return 0 if result["cudnn_ops"] else 1


if __name__ == "__main__":
    sys.exit(main())
