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

# ES on an MLP on MNIST, on a Ray instance started in-process. Data: $EVOPLAT_DATA (or --data-root).
demo: $(STAMP)
	$(BIN)/evoplat run $(DEMO_CONFIG) --set es.generations=$(DEMO_GENERATIONS)
	$(BIN)/evoplat report $$(ls -dt runs/es_mnist-* | head -n 1)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) runs
