"""engine.data.corpus.availability: what loading a corpus would take first, asked before
loading (the app's picker asks it rather than keep its own copy of the rules)."""

from __future__ import annotations

import engine.data.corpus
from engine.data.corpus import Availability, availability


def test_files_folders_and_corpora_files_are_just_read(tmp_path, monkeypatch):
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    (corpora / "nietzsche.txt").write_text("the book, offline", encoding="utf-8")
    assert availability(corpora / "nietzsche.txt") == Availability()
    assert availability(corpora) == Availability()
    assert availability("nietzsche", corpora) == Availability()  # corpora/ replaces the built-in


def test_nietzsche_is_downloaded_from_the_engines_url_and_falls_back_to_pydocs(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setattr(engine.data.corpus, "NIETZSCHE_URL", "http://127.0.0.1:9/nietzsche.txt")
    needs = availability("nietzsche", tmp_path)
    assert needs == Availability("nietzsche", "download", "http://127.0.0.1:9/nietzsche.txt", "pydocs")
    cached = tmp_path / "keras-home" / "datasets" / engine.data.corpus.NIETZSCHE_FILE
    cached.parent.mkdir(parents=True)
    cached.write_text("the book", encoding="utf-8")
    assert availability("nietzsche", tmp_path) == Availability("nietzsche")


def test_pydocs_is_built_on_first_use_and_unknown_names_take_nothing(tmp_path):
    from engine.data import pydocs

    assert availability("pydocs", tmp_path).first_use == (None if pydocs.is_cached() else "build")
    assert availability("no-such-corpus", tmp_path) == Availability()
