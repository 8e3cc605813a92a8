# weaksam: two commands on a fresh machine — `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CONFIG ?= configs/demo.yaml

.PHONY: install demo test lint format typecheck unit bench clean test-faults

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

# Node-failure tests on a simulated cluster (timing-sensitive on 2 cores; not yet in `make test`).
test-faults: install
	$(VENV)/bin/pytest -q -m faults tests/integration/test_cluster.py

test: lint typecheck unit

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install
	$(PY) -m ray_jobs.pipeline --config configs/bench.yaml

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
