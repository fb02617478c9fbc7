# steadytune: `make run` (the main job: a small seed sweep + stability report) and
# `make test`. Both create .venv and install pinned dependencies on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Real GLUE/WikiText-2 files are read in place, never copied into the project.
export STEADYTUNE_DATA ?= $(abspath ../shared/data)
export GLUE_DIR ?= $(STEADYTUNE_DATA)/glue
OUT ?= runs/demo

.PHONY: run test test-fast bench install clean

install: $(VENV)/.installed

# What the main job needs: the package and its required dependencies, nothing else.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and exactly pinned to the CPU wheel: the package asks for a range (so a
	# GPU build satisfies it), which pip would resolve to a multi-GB CUDA build here.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e .
	touch $@

# What the tests need on top: every extra they exercise (Ray, hub data, Parquet, the
# Trainer callback, TensorBoard and MLflow trackers) and the test tools.
TEST_EXTRAS := test,ray,hub,parquet,trainer,tensorboard,mlflow
$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[$(TEST_EXTRAS)]"
	touch $@

run: install
	$(BIN)/steadytune sweep --tasks rte --recipes devlin2019,mosbach2021 --seeds 1-3 \
		--train-limit 64 --set dev_limit=128 --set evals_per_epoch=1 --store $(OUT)/study.db
	$(BIN)/steadytune summary $(OUT)/study.db
	$(BIN)/steadytune report $(OUT)/study.db --out $(OUT)/report
	@echo "report: $(OUT)/report/index.html"

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -m "not integration and not ray and not browser"

# Speed against Hugging Face Trainer on this machine, same run (docs/performance.md).
bench: install
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python bench/trainer_compare.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs
