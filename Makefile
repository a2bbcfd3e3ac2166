# Two commands on a fresh machine with Python 3.10+: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_CONFIG ?= experiments/es_mnist.yaml
DEMO_GENERATIONS ?= 120

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# CI and benchmark machines keep the datasets in ../shared/data beside the checkout: used when it exists
# (and $EVOPLAT_DATA is not set). Elsewhere MNIST is downloaded into ~/.cache/evoplat/data on first use.
SHARED_DATA := $(wildcard $(abspath ../shared/data))
DATA_ENV := $(if $(SHARED_DATA),EVOPLAT_DATA="$${EVOPLAT_DATA:-$(SHARED_DATA)}",)

# ES on an MLP on MNIST (8x8 digits without network), on a Ray instance started in-process.
demo: $(STAMP)
	$(DATA_ENV) $(BIN)/evoplat run $(DEMO_CONFIG) --set es.generations=$(DEMO_GENERATIONS)
	$(BIN)/evoplat report $$(ls -dt runs/es_mnist-* | head -n 1)

test: $(STAMP)
	$(DATA_ENV) $(BIN)/python -m pytest -q --durations=15 tests

clean:
	rm -rf $(VENV) runs
