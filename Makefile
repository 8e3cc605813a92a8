# weaksam: two commands on a fresh machine — `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CONFIG ?= configs/demo.yaml

.PHONY: install demo test lint format typecheck unit bench clean test-cluster

# (Re)install when pyproject.toml changes. torch/torchvision come from this machine's local disk.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m ray_jobs.pipeline --config $(CONFIG)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy weaksam serve

unit: install
	$(VENV)/bin/pytest -q

# The simulated-cluster tests alone (S3, fake GPUs, lost nodes; part of `make test` too).
test-cluster: install
	$(VENV)/bin/pytest -q -m cluster

test: lint typecheck unit

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install
	$(PY) -m ray_jobs.pipeline --config configs/bench.yaml

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
