# usage: staged WSSS toolkit. `make demo` and `make test` are the two entry points.
# Every stage is a file target, so `make masks` reruns only what is missing or out of date.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
USAGE := HF_HUB_OFFLINE=1 $(BIN)/usage
STAMP := $(VENV)/.installed

# --- pipeline variables (override on the command line, e.g. `make seeds ROOT=~/data/voc OUT=runs/voc`)
OUT ?= demo
DATASET ?= voc
ROOT ?= $(OUT)/data
# more dataset options for every stage, e.g. DATA_ARGS="--allow-unlabelled" or "--classes names.txt"
DATA_ARGS ?=
TRAIN_SPLIT ?= train
# the classifiers' split: on the built-in data train_aug (train plus the images of synth --train-aug, with
# image-level labels, as VOC's train_aug is train plus SBD); on a dataset given by ROOT, TRAIN_SPLIT
# (pass CLS_SPLIT=train_aug for VOC with SBD)
CLS_SPLIT ?= $(if $(DATA),train_aug,$(TRAIN_SPLIT))
EVAL_SPLITS ?= train val
# the classifiers. On the built-in data (the demo): a small ViT (timm's test_vit3: 9 blocks, width 96,
# 0.8 M parameters) trained from scratch, the paper's transformer setting (tau1 = 1), where CM acts
# (docs/results.md#the-demo-make-demo says why); on a data set given by ROOT: EfficientNet-Lite0 with its
# ImageNet weights (the CPU-sized setting of the README's "Your own photos")
BACKBONE ?= $(if $(DATA),test_vit3,efficientnet_lite0)
SEG_BACKBONE ?= efficientnet_lite0
DEVICE ?= cpu
# the training seed of the classifiers, AffinityNet and the segmentation network (the data's is in SYNTH_ARGS)
SEED ?= 0
SYNTH_ARGS ?= --train 96 --val 100 --train-aug 504 --size 128 --classes 20 --seed 1
DEMO_CLS_ARGS := --preset paper --no-pretrained --epochs 40 --batch-size 32 --img-size 128 --lr 2e-3 --aug light \
  --warmup-epochs 0 --weight-decay 1e-4 --val-split val --workers 0
CLS_ARGS ?= $(if $(DATA),$(DEMO_CLS_ARGS),--preset paper --pretrained --epochs 8 --batch-size 16 --img-size 128 --lr 0.01 --aug light --val-split val)
SEED_ARGS ?= --scales 1.0,0.5,1.5 --overlays 8
# --workers 2: CRF and data-loading processes (unset, the CPU default is none: the work stays in-process)
PSA_ARGS ?= --preset auto --workers 2
AFF_ARGS ?= --backbone efficientnet_lite0 --pretrained --epochs 2 --batch-size 8 --crop 128
SEG_ARGS ?= --pretrained --epochs 8 --batch-size 8 --crop 128 --lr 0.01 --aspp-channels 64 --workers 2
PRED_ARGS ?= --scales 1.0 --flip

# the CAM baseline the paper compares against: the same classifier settings with the CAM mapping (Eq. 3)
# and no regulariser; its seed rows print above USAGE's
CAM_ARGS ?= --mapping cam --reg none

CLS := $(OUT)/cls/checkpoint.pt
CAM_CLS := $(OUT)/cls-cam/checkpoint.pt
SEEDS := $(foreach s,$(EVAL_SPLITS),$(OUT)/seeds-$(s)/seeds.h5)
CAM_SEEDS := $(foreach s,$(EVAL_SPLITS),$(OUT)/seeds-cam-$(s)/seeds.h5)
MASKS_TRAIN := $(OUT)/masks-$(TRAIN_SPLIT)/manifest.json
MASKS_OTHER := $(foreach s,$(filter-out $(TRAIN_SPLIT),$(EVAL_SPLITS)),$(OUT)/masks-$(s)/manifest.json)
MASKS := $(MASKS_TRAIN) $(MASKS_OTHER)
SEG := $(OUT)/seg/checkpoint.pt
PREDS := $(foreach s,$(EVAL_SPLITS),$(OUT)/preds-$(s)/manifest.json)

.PHONY: install test lint demo data cls cam-cls seeds cam-seeds masks seg preds eval clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	$(BIN)/pip install -e '.[dev,viz,tensorboard]'
	touch $(STAMP)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check usage_cli tests bench

# ---------------------------------------------------------------- pipeline
# the built-in data is made only where ROOT is its default; a real dataset (ROOT=~/data/voc) is used
# as it is, never written into
DATA := $(if $(filter $(OUT)/data,$(ROOT)),$(ROOT)/manifest.json)
data: $(ROOT)/manifest.json
$(ROOT)/manifest.json: | $(STAMP)
	$(USAGE) synth --out $(ROOT) $(SYNTH_ARGS)

cls: $(CLS)
$(CLS): $(DATA) | $(STAMP)
	$(USAGE) train-cls --dataset $(DATASET) --root $(ROOT) $(DATA_ARGS) --split $(CLS_SPLIT) --backbone $(BACKBONE) \
	  --out $(OUT)/cls --device $(DEVICE) --seed $(SEED) $(CLS_ARGS)

cam-cls: $(CAM_CLS)
$(CAM_CLS): $(DATA) | $(STAMP)
	$(USAGE) train-cls --dataset $(DATASET) --root $(ROOT) $(DATA_ARGS) --split $(CLS_SPLIT) --backbone $(BACKBONE) \
	  --out $(OUT)/cls-cam --device $(DEVICE) --seed $(SEED) $(CLS_ARGS) $(CAM_ARGS)

seeds: $(SEEDS)
$(OUT)/seeds-%/seeds.h5: $(CLS)
	$(USAGE) gen-seeds --ckpt $(CLS) --dataset $(DATASET) --root $(ROOT) $(DATA_ARGS) --split $* \
	  --out $(OUT)/seeds-$* --device $(DEVICE) $(SEED_ARGS)

cam-seeds: $(CAM_SEEDS)
$(OUT)/seeds-cam-%/seeds.h5: $(CAM_CLS)
	$(USAGE) gen-seeds --ckpt $(CAM_CLS) --dataset $(DATASET) --root $(ROOT) $(DATA_ARGS) --split $* \
	  --out $(OUT)/seeds-cam-$* --device $(DEVICE) $(SEED_ARGS)

# AffinityNet is trained once, on the training split's seeds; the other splits reuse it (as PSA does)
masks: $(MASKS)
$(MASKS_TRAIN): $(OUT)/seeds-$(TRAIN_SPLIT)/seeds.h5
	$(USAGE) refine-psa --seeds $< --dataset $(DATASET) --root $(ROOT) $(DATA_ARGS) --split $(TRAIN_SPLIT) \
	  --out $(OUT)/masks-$(TRAIN_SPLIT) --device $(DEVICE) --seed $(SEED) $(PSA_ARGS) $(AFF_ARGS)
$(MASKS_OTHER): $(OUT)/masks-%/manifest.json: $(OUT)/seeds-%/seeds.h5 $(MASKS_TRAIN)
	$(USAGE) refine-psa --seeds $< --dataset $(DATASET) --root $(ROOT) $(DATA_ARGS) --split $* \
	  --affinity $(OUT)/masks-$(TRAIN_SPLIT)/affinity.pt --out $(OUT)/masks-$* --device $(DEVICE) $(PSA_ARGS)

seg: $(SEG)
$(SEG): $(OUT)/masks-$(TRAIN_SPLIT)/manifest.json
	$(USAGE) train-seg --masks $(OUT)/masks-$(TRAIN_SPLIT) --dataset $(DATASET) --root $(ROOT) $(DATA_ARGS) \
	  --split $(TRAIN_SPLIT) --backbone $(SEG_BACKBONE) --out $(OUT)/seg --device $(DEVICE) --seed $(SEED) $(SEG_ARGS)

preds: $(PREDS)
$(OUT)/preds-%/manifest.json: $(SEG)
	$(USAGE) predict-seg --ckpt $(SEG) --dataset $(DATASET) --root $(ROOT) $(DATA_ARGS) --split $* \
	  --out $(OUT)/preds-$* --device $(DEVICE) $(PRED_ARGS)

eval: $(CAM_SEEDS) $(SEEDS) $(MASKS) $(PREDS)
	@mkdir -p $(OUT)/metrics
	@set -e; for s in $(EVAL_SPLITS); do \
	  $(USAGE) evaluate --quiet --dataset $(DATASET) --root $(ROOT) $(DATA_ARGS) --split $$s --pred $(OUT)/seeds-cam-$$s/seeds.h5 --out $(OUT)/metrics/seeds-cam-$$s.json; \
	  $(USAGE) evaluate --quiet --dataset $(DATASET) --root $(ROOT) $(DATA_ARGS) --split $$s --pred $(OUT)/seeds-$$s/seeds.h5 --out $(OUT)/metrics/seeds-usage-$$s.json; \
	  $(USAGE) evaluate --quiet --dataset $(DATASET) --root $(ROOT) $(DATA_ARGS) --split $$s --pred $(OUT)/masks-$$s --out $(OUT)/metrics/masks-$$s.json; \
	  $(USAGE) evaluate --quiet --dataset $(DATASET) --root $(ROOT) $(DATA_ARGS) --split $$s --pred $(OUT)/preds-$$s --out $(OUT)/metrics/preds-$$s.json; \
	done
	$(USAGE) report $(foreach k,seeds-cam seeds-usage masks preds,$(foreach s,$(EVAL_SPLITS),$(OUT)/metrics/$(k)-$(s).json)) \
	  --html $(OUT)/report

# the demo trains its two classifiers (USAGE's and the CAM baseline) side by side, each on half the cores
# (DEMO_JOBS=1: one after the other, on all of them); then the rest of the chain in order
DEMO_JOBS ?= 2
NPROC := $(shell nproc 2>/dev/null || echo 2)
DEMO_THREADS := $(shell echo $$(( $(NPROC) / $(DEMO_JOBS) > 0 ? $(NPROC) / $(DEMO_JOBS) : 1 )))
demo: $(STAMP)
	OMP_NUM_THREADS=$(DEMO_THREADS) MKL_NUM_THREADS=$(DEMO_THREADS) \
	  $(MAKE) --no-print-directory -j$(DEMO_JOBS) -Oline cls cam-cls
	$(MAKE) --no-print-directory eval

clean-demo:
	rm -rf $(OUT)

# ---------------------------------------------------------------- paper seed tables (bench/paper_tables.py)
# The paper's Tables 1 / 5 / 7 / 8 over several training seeds (mean ± std, paired Δ vs cam), e.g.
#   make table1 ROOT=~/data/VOCdevkit/.. BACKBONE=deit_s DEVICE=cuda TABLE_ARGS=--paper
# The seed list is TABLE_SEEDS, not SEEDS: SEEDS above already names the seed files of `make seeds`.
TABLE_SEEDS ?= 0,1,2
TABLES_OUT ?= $(OUT)/tables
TABLE_ARGS ?=

.PHONY: table1 table5 table7 table8

table1 table5 table7 table8: | $(STAMP)
	$(BIN)/python bench/paper_tables.py $@ --root $(ROOT) --dataset $(DATASET) --backbone $(BACKBONE) \
	  --device $(DEVICE) --seeds $(TABLE_SEEDS) --out $(TABLES_OUT) $(TABLE_ARGS)
