# Two commands set everything up on a fresh machine: `make app` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8866

.PHONY: app test lint bench clean

# Re-install only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

app: $(STAMP)
	$(BIN)/voila notebooks/app.ipynb --port=$(PORT) --no-browser --Voila.ip=0.0.0.0

test: $(STAMP)
	$(BIN)/python -m pytest -ra

lint: $(STAMP)
	$(BIN)/ruff check workbench widgets sample_models tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/compression.py

clean:
	rm -rf $(VENV) .workbench-cache
