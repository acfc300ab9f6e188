# Two commands set everything up on a fresh machine: `make app` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8866
LAB_PORT ?= 8888

.PHONY: app lab test browser lint bench clean

JUPYTER_CONFIG := jupyter-config/jupyter_server_config.d/edge_workbench.json

# Re-install only when pyproject.toml (or the Jupyter config) changes.
$(STAMP): pyproject.toml $(JUPYTER_CONFIG)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,ray]'
	# An editable install skips data-files: enable the graph view's server extension.
	install -D -m 644 $(JUPYTER_CONFIG) $(VENV)/etc/jupyter/jupyter_server_config.d/edge_workbench.json
	touch $(STAMP)

app: $(STAMP)
	# Voila plus the same-origin routes of the offline Netron graph view.
	$(BIN)/python -m widgets.app_server notebooks/app.ipynb --port=$(PORT) --no-browser --Voila.ip=0.0.0.0

# JupyterLab on this folder (the notebooks are in notebooks/), graph view included.
lab: $(STAMP)
	$(BIN)/jupyter lab --port=$(LAB_PORT) --no-browser --ip=0.0.0.0

test: $(STAMP) browser
	$(BIN)/python -m pytest -ra

# Chromium for the browser tests: installed as root with apt-get, else one line saying how.
browser:
	@.ci/install-browser

lint: $(STAMP)
	$(BIN)/ruff check workbench widgets sample_models tests benchmarks

bench: $(STAMP)  # every benchmark runs; the exit status says whether any target was missed
	$(BIN)/pip install --quiet -e '.[dev,bench]'  # NNCF, for the side by side only
	status=0; \
	$(BIN)/python benchmarks/compression.py || status=1; \
	$(BIN)/python benchmarks/ui.py || status=1; \
	$(BIN)/python benchmarks/runtimes.py || status=1; \
	exit $$status

clean:
	rm -rf $(VENV) .workbench-cache
