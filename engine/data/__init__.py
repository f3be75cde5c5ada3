"""Data: corpora, text files, the pydocs corpus, training windows, a run's training text."""
