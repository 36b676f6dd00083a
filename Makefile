# `make run` and `make test` each do all set-up on a fresh machine, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
export PIPELINE_CACHE_DIR ?= $(CURDIR)/work/cache

.PHONY: setup run test lint benchmark clean

$(BIN)/pipeline: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch 2.14.1 / torchvision 0.29.1 install from this machine's local disk (pinned in pyproject.toml)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

$(FASHION_MNIST):
	(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || \
	  (sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist)

setup: $(BIN)/pipeline $(FASHION_MNIST)

# Until the Prefect flow lands, the main job is the stability-gap benchmark in its quick mode.
run: setup
	$(BIN)/python benchmarks/stability_gap.py --quick

test: setup
	$(BIN)/ruff check pipeline tests benchmarks
	$(BIN)/python -m pytest -q

benchmark: setup
	$(BIN)/python benchmarks/stability_gap.py

clean:
	rm -rf $(VENV) work
