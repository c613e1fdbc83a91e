# Two commands a new user types: `make run` (set up, then the offline smoke pipeline) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hala-installed
RECIPE ?= smoke
OUT ?= runs/$(RECIPE)
# Tiny models of the smoke world, shared by `make run` and `make test` (built once, content-addressed).
export HALA_CACHE ?= $(CURDIR)/.hala-cache

.PHONY: install run test compile clean

install: $(STAMP)

# Quick when .venv is complete: the stamp is newer than pyproject.toml, so nothing reinstalls.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch first: a plain torch requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/hala run --recipe $(RECIPE) --out $(OUT)

test: install
	$(BIN)/python -m pytest -q -ra

compile: install
	$(BIN)/hala compile --recipe $(RECIPE) --out $(RECIPE).pipeline.yaml

clean:
	rm -rf runs .hala-cache .pytest_cache
