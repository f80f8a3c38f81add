# usage: staged WSSS toolkit. `make demo` and `make test` are the two entry points.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
USAGE := HF_HUB_OFFLINE=1 $(BIN)/usage
STAMP := $(VENV)/.installed

# --- demo / pipeline variables (override on the command line) ---
OUT ?= demo
DATASET ?= voc
ROOT ?= $(OUT)/data
BACKBONE ?= efficientnet_lite0
SEG_BACKBONE ?= efficientnet_lite0
DEVICE ?= cpu
SYNTH_ARGS ?= --train 96 --val 32 --size 128 --seed 0
CLS_ARGS ?=
SEED_ARGS ?=
PSA_ARGS ?=
SEG_ARGS ?=

.PHONY: install test lint demo clean-demo data seeds masks seg eval

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check usage_cli tests bench

# ---------------------------------------------------------------- pipeline
data: $(ROOT)/manifest.json
$(ROOT)/manifest.json: | $(STAMP)
	$(USAGE) synth --out $(ROOT) $(SYNTH_ARGS)

demo: $(STAMP) $(ROOT)/manifest.json
	$(USAGE) evaluate --dataset $(DATASET) --root $(ROOT) --split val --pred $(ROOT)/VOCdevkit/VOC2012/SegmentationClass --out $(OUT)/metrics-gt.json

clean-demo:
	rm -rf $(OUT)
