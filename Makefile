# swinlab: `make demo` and `make test` set everything up on a fresh Debian machine with Python 3.11.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.swinlab-installed
FMNIST_DIR := /usr/share/datasets/fashion-mnist
# torch/torchvision pinned to the builds this workplace's pip serves; CI installs the same.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: setup data demo test test-all test-fast lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Fashion-MNIST from Debian's package (idx .gz files); needs root, skipped when already there.
# Not fatal: without it the real-data tests skip, and `swinlab demo` says where to get the data.
data:
	@if [ ! -f $(FMNIST_DIR)/t10k-labels-idx1-ubyte.gz ]; then \
	  echo "installing Debian's dataset-fashion-mnist into $(FMNIST_DIR)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
	    || echo "warning: could not install dataset-fashion-mnist; real-data tests will be skipped"; \
	fi

demo: setup data
	$(VENV)/bin/swinlab demo --out runs/demo

# Every test but the exhaustive ones (larger copies of checks smaller tests make); CI runs this.
test: setup data
	$(PY) -m pytest -q -m "not exhaustive"

# Everything, the largest presets and every export format at full size included.
test-all: setup data
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

bench: setup
	$(PY) benchmarks/bench.py --batch-size 8 --img-size 224 --precision 32-true bf16-mixed bf16-true --mode infer train --warmup 2 --repeats 5 --out runs/bench

clean:
	rm -rf $(VENV) runs .pytest_cache
