# `make run`, `make test` and `make lint` set everything up on first use (a virtual environment
# in .venv with the project and its test tools), then run the app, the test suite, or ruff
# (the style in pyproject.toml).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: run test test-fast lint bench setup clean

run: $(STAMP)
	$(VENV)/bin/charlm-tui $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The tests that train nothing and never import TensorFlow (those marked `trains` or `slow`
# are left out; one that imports TensorFlow anyway fails, saying so: tests/conftest.py).
test-fast: $(STAMP)
	CHARLM_TESTS_WITHOUT_TENSORFLOW=1 $(VENV)/bin/python -m pytest -n 2 -m "not trains and not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/python bench/run_all.py $(ARGS)

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
