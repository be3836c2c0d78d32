# Every target creates the virtual environment on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.femot-installed

.PHONY: demo test test-slow bench lint typecheck docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[all]"
	$(BIN)/femot warmup
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/femot demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/qrot.py

lint: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m mypy

typecheck: $(STAMP)
	$(BIN)/python -m mypy

# The documentation site (Sphinx, warnings are errors) into docs/_build/html.
docs: $(STAMP)
	rm -rf docs/generated  # autosummary stubs of names that no longer exist would fail the build
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

clean:
	rm -rf $(VENV) femot-results .pytest_cache docs/_build docs/generated docs/auto_examples docs/api.rst
