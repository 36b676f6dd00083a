# `make run` and `make test` each do all set-up on a fresh machine, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
export PIPELINE_CACHE_DIR ?= $(CURDIR)/work/cache

.PHONY: setup run test test-kernels lint benchmark parity diff-scale version-scale growth throughput clean

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

# The main job: DVC data versions arrive in a scratch workspace (work/demo), the update-model flow updates,
# gates and promotes after each. `make run ARGS=--s3` keeps the registry and the DVC remote in moto's S3 server.
run: setup
	$(BIN)/python -m flows.demo $(ARGS)

# The tests whose premises rest on a trained tiny model, run again under another family of torch's CPU kernels
# (AVX2 where the CPU has AVX-512, else the plain C++ ones): a premise must hold on any CPU, not on the one that wrote it.
MODEL_TESTS := tests/test_gate.py tests/test_sgm.py tests/test_update.py
SECOND_KERNELS = $(shell $(BIN)/python -c "import torch; print('avx2' if torch.backends.cpu.get_cpu_capability() == 'AVX512' else 'default')")

test: setup
	$(BIN)/ruff check pipeline flows tests benchmarks
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(BIN)/python -m pytest -q
	$(MAKE) --no-print-directory test-kernels

test-kernels: setup
	ATEN_CPU_CAPABILITY=$(SECOND_KERNELS) ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
	  $(BIN)/python -m pytest -q -m "not slow" -p no:cacheprovider $(MODEL_TESTS)

# The headline: the production stream (a large base growing by a few percent per version), the chain as the flow runs
# it against the retrain of every version at 5 seeds, beside shorter retrains, a warm start and the full network
# (about 13 h on 2 CPU cores; resumable, on a fresh machine too: finished runs are kept in benchmarks/results/ledger/).
benchmark: setup
	$(BIN)/python -m benchmarks.production --seeds 5 --dense-seeds 5 --baselines $(ARGS)

# Update vs standard retrain on two small streams and the update recipe's ablation, 3 seeds (about 1 h here).
parity: setup
	$(BIN)/python -m benchmarks.parity --per-class 500 --test-per-class 200 --growth-from 500 --growth-to 600 --iso $(ARGS)

# A version's manifest and diff on one million small files, 1% new (about 10 min here).
diff-scale: setup
	$(BIN)/python -m benchmarks.diff_scale $(ARGS)

# The whole version (update and gate, as processes) on bases of 1,000 and 5,900 images per class (about 25 min here).
version-scale: setup
	$(BIN)/python -m benchmarks.version_scale $(ARGS)

# The growth stream: ten data versions, chained updates against retrains at three budgets, half of Fashion-MNIST
# (about 1 h on 2 CPU cores; ARGS="--scale 1.0" for all 70,000 images, "--seeds 3" for three seeds).
growth: setup
	$(BIN)/python -m benchmarks.growth --iso $(ARGS)

# Images/s of raw steps and training loops, 64 and 224 px, fp32 and bf16, on this machine's device (GPU if any).
throughput: setup
	$(BIN)/python -m benchmarks.throughput $(ARGS)

clean:
	rm -rf $(VENV) work
