# One command for each job. A virtualenv in .venv holds mreg and its test tools.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-unit lint bench clean

$(BIN)/mreg: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

demo: $(BIN)/mreg  ## build, train, register and serve the bundled example (needs a Docker engine)
	MREG=$(BIN)/mreg bash examples/iris/demo.sh

test: $(BIN)/mreg  ## unit and end-to-end tests (the end-to-end ones need a Docker engine)
	$(BIN)/pytest

test-unit: $(BIN)/mreg  ## the tier without Docker and without PyPI: seconds, on any machine
	$(BIN)/pytest tests/unit -m "not docker and not network"

lint: $(BIN)/mreg
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(BIN)/mreg  ## the benchmarks (about 20 minutes; an idle machine gives the steadiest figures)
	$(BIN)/python bench/builds.py
	$(BIN)/python bench/s3_upload.py
	$(BIN)/python bench/tree_upload.py
	$(BIN)/python bench/lookups.py
	$(BIN)/python bench/filter.py
	$(BIN)/python bench/ui.py

clean:
	rm -rf $(VENV) .mreg out .mypy_cache .pytest_cache .ruff_cache
