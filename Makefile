# weaksam: two commands on a fresh machine — `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CONFIG ?= configs/demo.yaml

.PHONY: install demo test lint format typecheck unit bench bench-transformers clean test-cluster

# Pins read from pyproject.toml (the one place they are written).
pin = $(shell sed -n 's/^ *"\($(1)==[^"]*\)",.*/\1/p' pyproject.toml)
PIP := $(PY) -m pip install -q --disable-pip-version-check

# (Re)install when pyproject.toml changes. torch/torchvision come from this machine's local disk.
# sam2 exists on PyPI only as a source distribution whose build imports torch: torch goes in
# first, then sam2 is built against it without build isolation (which would fetch another
# torch) and without its optional CUDA extension (SAM2_BUILD_CUDA=0), then the project.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) "setuptools>=68" wheel '$(call pin,torch)'
	SAM2_BUILD_CUDA=0 $(PIP) --no-build-isolation '$(call pin,sam2)'
	$(PIP) -e '.[dev]'
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

# RT-DETR and Mask2Former on `make bench`'s PGT: bench's earlier stages are linked, not rerun
# (configs/bench_transformers.yaml: `upstream: runs/bench`); run `make bench` first.
bench-transformers: install
	$(PY) -m ray_jobs.pipeline --config configs/bench_transformers.yaml

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
