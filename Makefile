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

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and exactly pinned: a looser requirement pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test,ray]"
	touch $@

run: install
	$(BIN)/steadytune sweep --tasks rte --recipes devlin2019,mosbach2021 --seeds 1-3 \
		--train-limit 64 --set dev_limit=128 --set evals_per_epoch=1 --store $(OUT)/study.db
	$(BIN)/steadytune summary $(OUT)/study.db
	$(BIN)/steadytune report $(OUT)/study.db --out $(OUT)/report
	@echo "report: $(OUT)/report/index.html"

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not integration and not ray and not browser"

# Speed against Hugging Face Trainer on this machine, same run (docs/performance.md).
bench: install
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python bench/trainer_compare.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs
