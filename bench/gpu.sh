#!/usr/bin/env bash
# Many seeds per GPU, then the seed-heavy Table 1 analogue, in one short device lease.
#
#   bash bench/gpu.sh prepare   # on the CPU machine: .gpu_bundle/ (git-ignored, ~47 MB): fp16 MiniLM and
#                               # RTE/MRPC/CoLA train+dev (WHEEL=1 adds this machine's transformers wheel)
#   bash bench/gpu.sh run       # on the GPU machine (carry .gpu_bundle); about 9 minutes
#   bash bench/gpu.sh regime    # there: the failing-regime study (RTE, CoLA; lr x bias correction x
#                               # epochs 3/20 on 256-example slices), 16 workers, until BUDGET ends
#   bash bench/gpu.sh seeds     # there: the factorial seed study (CoLA 1,000 examples, 5 head x 5 data
#                               # seeds: devlin2019 with 2 repeats each, ~2.5 min, then mosbach2021 once
#                               # each, ~5.5 min), until BUDGET ends
#   bash bench/gpu.sh guard     # there: issue 15's online validation of the doomed-run guard (1,000-example
#                               # CoLA and RTE, seeds 101-110), 16 workers, until BUDGET ends
#
# Part 1 (packing): the same MiniLM runs (RTE, 1024-example slice, mosbach2021, 3 epochs,
# diagnostics at the default cadence) with workers = 1, 4, 8, 16 on one GPU; prints wall time,
# runs/minute and the speed-up over one run at a time (in-process, no start-up cost).
# Part 2 (issue 6): devlin2019 / mixout2020 / mosbach2021 on full RTE, MRPC and CoLA, seeds
# 1-25 (seeds outermost, so a cut-short study is balanced), with the best worker count of
# part 1, until the time budget ends; it resumes results/table1-gpu.db and writes the study
# to $OUT (or /tmp): copy it back to results/ to keep it.
# Uses the repository's sources (PYTHONPATH=src) and the machine's own torch.
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=.gpu_bundle

setup_python() {  # the bundle's transformers wheel if carried, else the machine's own
  PY=${PY:-python3}
  if ls $BUNDLE/whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site $BUNDLE/whl/*.whl
    export PYTHONPATH=/tmp/site:src
  else
    export PYTHONPATH=src
  fi
  export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
}

checkpoint_study() {  # fold the WAL into the study file (only it comes back) and count its runs
  "$PY" -c "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('PRAGMA wal_checkpoint(TRUNCATE)'); print(c.execute('select status, count(*) from runs group by status').fetchall())" "$1"
}
case "${1:-run}" in
prepare)
  PY=${PY:-.venv/bin/python}
  DATA=${STEADYTUNE_DATA:-../shared/data}
  for t in RTE MRPC CoLA; do
    mkdir -p "$BUNDLE/glue/$t"
    cp "$DATA/glue/$t/train.tsv" "$DATA/glue/$t/dev.tsv" "$BUNDLE/glue/$t/"
  done
  "$PY" - <<'PY'
import torch
from transformers import AutoModel, AutoTokenizer
from steadytune.training.models import resolve_model_path
path = resolve_model_path("minilm")
AutoModel.from_pretrained(path, dtype=torch.float16).save_pretrained(".gpu_bundle/minilm-fp16")
AutoTokenizer.from_pretrained(path).save_pretrained(".gpu_bundle/minilm-fp16")
PY
  # xz saves ~4.6 MB of the 45 MB of weights: the repository and the bundle must stay under the
  # 64 MiB that travel. bench/gpu_session.py unpacks it there (python's lzma).
  xz -T2 -6 -f "$BUNDLE/minilm-fp16/model.safetensors"
  # The GPU image's transformers (5.17 on 2026-11-27) gave byte-identical CPU curves to 5.24 here,
  # so the wheel (13.5 MB) is left out unless WHEEL=1: tracked files + bundle must stay under 64 MiB.
  if [ "${WHEEL:-0}" = 1 ]; then
    mkdir -p "$BUNDLE/whl"
    "$PY" -m pip download -q --no-deps -d "$BUNDLE/whl" "transformers==$("$PY" -c 'import transformers; print(transformers.__version__)')"
  fi
  du -sh "$BUNDLE"; echo "tracked files: $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) bytes (both together < 64 MiB)"
  ;;
run)
  OUTDIR=${OUT:-/tmp/gpu-out}
  mkdir -p "$OUTDIR"
  BUDGET=${BUDGET:-540}           # seconds for the whole script
  T0=$(date +%s)
  exec > >(tee "$OUTDIR/gpu.txt") 2>&1
  setup_python
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$PY" -c 'import torch, transformers, steadytune; print("torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available(), "cpus", __import__("os").cpu_count())'
  M=$BUNDLE/minilm-fp16
  DEVICE=${DEVICE:-cuda}          # DEVICE=cpu WS="1 2" PACK_LIMIT=32 T1_EXTRA="--train-limit 32": a dry rehearsal
  common=(--tasks rte --recipes mosbach2021 --model $M --data-dir $BUNDLE/glue --train-limit ${PACK_LIMIT:-1024}
          --set epochs=3 --set evals_per_epoch=1 --set device=$DEVICE)
  echo "== part 1: runs per GPU (RTE ${PACK_LIMIT:-1024} examples, mosbach2021, 3 epochs)"
  base=""; : >/tmp/rpm.txt
  for W in ${WS:-1 4 8 16}; do
    [ $(( $(date +%s) - T0 )) -gt $(( BUDGET / 2 )) ] && { echo "workers=$W skipped (time)"; continue; }
    K=$(( W == 1 ? 4 : 2 * W ))
    rm -f /tmp/pack-$W.db*
    start=$(date +%s.%N)
    timeout 100 "$PY" -m steadytune sweep "${common[@]}" --seeds 1-$K --store /tmp/pack-$W.db \
      --workers $W >/tmp/pack-$W.log 2>&1 || { echo "workers=$W failed or timed out"; tail -5 /tmp/pack-$W.log; continue; }
    calc() { "$PY" -c "print($1)"; }  # no bc on the GPU image
    wall=$(calc "$(date +%s.%N) - $start")
    rpm=$(calc "60*$K/$wall")
    [ -z "$base" ] && base=$rpm
    echo "$rpm $W" >>/tmp/rpm.txt
    printf 'workers=%-2s runs=%-2s wall=%6.1fs runs_per_min=%6.2f speedup=%5.2f\n' $W $K $wall $rpm \
      "$(calc "$rpm/$base")"
  done
  "$PY" -m steadytune summary /tmp/pack-1.db --format csv 2>/dev/null | head -3 || true
  "$PY" -m steadytune summary /tmp/pack-16.db --format csv 2>/dev/null | head -3 || true
  BEST=$(sort -gr /tmp/rpm.txt | head -1 | cut -d' ' -f2); BEST=${BEST:-8}
  LEFT=$(( BUDGET - ($(date +%s) - T0) - 25 ))
  echo "== part 2: Table 1 analogue, full training sets, workers=$BEST, ${LEFT}s"
  STORE=$OUTDIR/table1-gpu.db
  [ -f results/table1-gpu.db ] && [ ! -f $STORE ] && cp results/table1-gpu.db $STORE  # resume the committed study
  if [ "$LEFT" -gt 30 ]; then
    timeout -s INT -k 15 $LEFT "$PY" -m steadytune sweep --tasks rte,mrpc,cola \
      --recipes devlin2019,mixout2020,mosbach2021 --seeds 1-25 --model $M --data-dir $BUNDLE/glue \
      --set device=$DEVICE --set diag_every=100 --store $STORE --workers $BEST ${T1_EXTRA:-} >/tmp/table1.log 2>&1 || true
    tail -4 /tmp/table1.log
    checkpoint_study "$STORE"
    "$PY" -m steadytune summary $STORE 2>&1 | head -40 || true
  fi
  cp /tmp/table1.log /tmp/pack-1.log /tmp/pack-16.log "$OUTDIR/" 2>/dev/null || true
  echo "total ${SECONDS}s"
  ;;
regime)
  OUTDIR=${OUT:-/tmp/gpu-out}; mkdir -p "$OUTDIR"
  BUDGET=${BUDGET:-170}
  exec > >(tee "$OUTDIR/gpu-regime.txt") 2>&1
  setup_python
  STORE=$OUTDIR/regime-gpu.db
  [ -f results/regime-gpu.db ] && [ ! -f $STORE ] && cp results/regime-gpu.db $STORE  # resume the committed study
  timeout -s INT -k 15 $BUDGET "$PY" -m steadytune sweep --tasks rte,cola --recipes devlin2019 --seeds 1-5 \
    --grid lr=2e-5,1e-4,2e-4 --grid correct_bias=true,false --grid epochs=3,20 --train-limit 256 \
    --model $BUNDLE/minilm-fp16 --data-dir $BUNDLE/glue --set evals_per_epoch=1 --set device=${DEVICE:-cuda} \
    --store $STORE --workers ${WORKERS:-16} >/tmp/regime.log 2>&1 || true
  grep -E " (ok|FAILED|DIVERGED)" /tmp/regime.log | tail -5 || true
  checkpoint_study "$STORE"
  cp /tmp/regime.log "$OUTDIR/"
  ;;
seeds)
  # Which seed stream causes the spread, and the nondeterminism floor (docs/reproduction.md § 5).
  # MODEL=minilm DATA=../shared/data/glue DEVICE=cpu WORKERS=2 EXTRA="--max-steps 4 --set dev_limit=64"
  # TRAIN_LIMIT=32 OUT=/tmp/seeds-rehearsal bash bench/gpu.sh seeds   # a CPU rehearsal
  OUTDIR=${OUT:-/tmp/gpu-out}; mkdir -p "$OUTDIR"
  BUDGET=${BUDGET:-480}
  T0=$(date +%s)
  exec > >(tee "$OUTDIR/gpu-seeds.txt") 2>&1
  setup_python
  STORE=$OUTDIR/factorial-cola1k-gpu.db
  [ -f results/factorial-cola1k-gpu.db ] && [ ! -f $STORE ] && cp results/factorial-cola1k-gpu.db $STORE  # resume
  for RUN in devlin2019:2 mosbach2021:1; do  # one sweep each: a cut-short study still has one complete design
    RECIPE=${RUN%:*}; REPEATS=${RUN#*:}
    LEFT=$(( BUDGET - ($(date +%s) - T0) - 20 ))
    [ "$LEFT" -gt 30 ] || { echo "$RECIPE skipped (time)"; continue; }
    timeout -s INT -k 15 $LEFT "$PY" -m steadytune sweep --tasks cola --recipes $RECIPE --seeds 1 \
      --grid head_seed=1-5 --grid data_seed=1-5 --repeats $REPEATS --train-limit ${TRAIN_LIMIT:-1000} \
      --model ${MODEL:-$BUNDLE/minilm-fp16} --data-dir ${DATA:-$BUNDLE/glue} --set evals_per_epoch=1 \
      --set diag_every=50 --set device=${DEVICE:-cuda} --store $STORE --workers ${WORKERS:-16} ${EXTRA:-} \
      >/tmp/seeds-$RECIPE.log 2>&1 || true
    tail -2 /tmp/seeds-$RECIPE.log
  done
  checkpoint_study "$STORE"
  "$PY" -m steadytune summary $STORE 2>&1 | head -20 || true
  "$PY" -m steadytune summary $STORE --variance 2>&1 | head -30 || true
  cp /tmp/seeds-*.log "$OUTDIR/" 2>/dev/null || true
  ;;
guard)
  # devlin2019 at lr 2e-5 (the paper's) and 2e-4 (the failing regime) unguarded (flag), with restart and
  # with switch (to bias correction), then mosbach2021; seeds in no stored study. Resumes
  # results/guard-1k-gpu.db; copy $OUT/guard-1k-gpu.db back to results/ and run results/reproduce.py.
  # About 55k optimiser steps in all (~30k devlin2019 with restarts, 25k mosbach2021): ~10-12 minutes at
  # the ~95 steps/s of 16 workers measured on one H200 (docs/performance.md); a cut-short sweep resumes.
  OUTDIR=${OUT:-/tmp/gpu-out}; mkdir -p "$OUTDIR"
  BUDGET=${BUDGET:-720}
  T0=$(date +%s)
  exec > >(tee "$OUTDIR/gpu-guard.txt") 2>&1
  setup_python
  STORE=$OUTDIR/guard-1k-gpu.db
  [ -f results/guard-1k-gpu.db ] && [ ! -f $STORE ] && cp results/guard-1k-gpu.db $STORE
  common=(--tasks cola,rte --seeds 101-110 --train-limit 1000 --model $BUNDLE/minilm-fp16 --data-dir $BUNDLE/glue
          --set evals_per_epoch=1 --set device=${DEVICE:-cuda} --store $STORE --workers ${WORKERS:-16})
  timeout -s INT -k 15 $(( BUDGET * 11 / 20 )) "$PY" -m steadytune sweep --recipes devlin2019 --grid lr=2e-5,2e-4 \
    --grid guard=flag,restart,switch --set guard_switch=correct_bias=true --set guard_attempts=3 \
    "${common[@]}" >/tmp/guard.log 2>&1 || true
  LEFT=$(( BUDGET - ($(date +%s) - T0) - 20 ))
  timeout -s INT -k 15 $LEFT "$PY" -m steadytune sweep --recipes mosbach2021 "${common[@]}" >>/tmp/guard.log 2>&1 || true
  tail -3 /tmp/guard.log
  checkpoint_study "$STORE"
  "$PY" -m steadytune summary $STORE 2>&1 | tail -30 || true
  cp /tmp/guard.log "$OUTDIR/"
  ;;
*) echo "usage: bash bench/gpu.sh prepare|run|regime|seeds|guard" >&2; exit 2 ;;
esac
