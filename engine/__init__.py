"""charlm-tui's engine: corpus, windows, model, sampler, training loop, run directories.

Usable from a script, a notebook or a headless run; it never imports a UI library, and
it imports TensorFlow only when a model is built or loaded.

    from engine.data.corpus import load_corpus
    from engine.config import preset
    from engine.run.training import Trainer

    corpus = load_corpus("nietzsche", lowercase=True)  # the book lower-cases its text
    Trainer(corpus, preset("book"), "runs/book", on_event=print).run()
"""
