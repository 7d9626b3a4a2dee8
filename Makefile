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

.PHONY: help install data-fmnist demo test test-all lint bench reproduce-cifar100 compare \
	compare-fmnist

help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

install: $(STAMP) data-fmnist ## Create .venv and install flip with its dev tools (pinned by constraints.txt)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

data-fmnist: ## Fashion-MNIST from Debian's dataset-fashion-mnist (needs root for apt-get)
	@test -f $(FMNIST) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	  else echo "Fashion-MNIST: run 'sudo apt-get install dataset-fashion-mnist', or let torchvision download it (data.download=true)"; fi; }

demo: install ## AutoFLIP vs FedAvg on Fashion-MNIST (pathological, 2 classes/client), then the table and plot
	$(PY) -m flip -m experiment=fmnist_patho hydra.sweep.dir=$(DEMO_DIR)
	$(PY) -m flip.report $(DEMO_DIR)

test: install ## The test suite (about 10 minutes on 2 CPU cores)
	$(PY) -m pytest

test-all: install ## Also the slow real-data tests
	$(PY) -m pytest -m ''

lint: install ## ruff
	$(VENV)/bin/ruff check .

bench: install ## Benchmarks (JSON under benchmarks/results/)
	$(PY) benchmarks/round_overhead.py

reproduce-cifar100: install ## The paper's CIFAR-100 cells (TwoCNN h128 and ResNet-18; AutoFLIP, FedAvg). Needs a GPU and the data (downloaded by torchvision)
	$(PY) -m flip -m experiment=cifar100_twocnn hydra.sweep.dir=$(CIFAR100_DIR)/twocnn
	$(PY) -m flip -m experiment=cifar100_resnet18 hydra.sweep.dir=$(CIFAR100_DIR)/resnet18
	$(PY) -m flip.report $(CIFAR100_DIR)/twocnn $(CIFAR100_DIR)/resnet18 --out $(CIFAR100_DIR)

compare: install ## Dashboard of finished runs: make compare RUNS="DIR ..." [OUT=DIR] [TARGET=0.7]
	$(PY) -m flip.compare $(RUNS) $(if $(OUT),--out $(OUT)) $(if $(TARGET),--target $(TARGET))

compare-fmnist: install ## AutoFLIP, FedAvg, PruneFL, EFLPrune, random pruning on Fashion-MNIST, then the dashboard (five runs of the demo setting)
	$(PY) -m flip -m experiment=fmnist_compare hydra.sweep.dir=$(COMPARE_DIR)
	$(PY) -m flip experiment=fmnist_compare algorithm=random \
	  random_pruning.reference_run=$(COMPARE_DIR) hydra.run.dir=$(COMPARE_DIR)/4_random
	$(PY) -m flip.compare $(COMPARE_DIR)
