#!/usr/bin/env bash
# Many seeds per GPU: the same K MiniLM runs on RTE, one at a time vs packed K-wide on one GPU.
#
#   bash bench/gpu.sh prepare   # on the CPU machine: .gpu_bundle/ = fp16 MiniLM + RTE files (~50 MB, git-ignored)
#   bash bench/gpu.sh run       # on the GPU machine (carry .gpu_bundle); a few minutes
#
# Prints wall time and runs/minute for workers = 1, 2, 4, 8 and the speed-up over one run
# at a time. Uses the repository's sources (PYTHONPATH=src) and the machine's own
# torch/transformers; each run trains 3 epochs on a 512-example RTE slice in fp32.
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=.gpu_bundle
case "${1:-run}" in
prepare)
  PY=${PY:-.venv/bin/python}
  mkdir -p "$BUNDLE/glue/RTE"
  cp "${STEADYTUNE_DATA:-../shared/data}/glue/RTE/train.tsv" "${STEADYTUNE_DATA:-../shared/data}/glue/RTE/dev.tsv" "$BUNDLE/glue/RTE/"
  "$PY" - <<'PY'
import torch
from transformers import AutoModel, AutoTokenizer
from steadytune.models import resolve_model_path
path = resolve_model_path("minilm")
AutoModel.from_pretrained(path, dtype=torch.float16).save_pretrained(".gpu_bundle/minilm-fp16")
AutoTokenizer.from_pretrained(path).save_pretrained(".gpu_bundle/minilm-fp16")
PY
  du -sh "$BUNDLE"
  ;;
run)
  export PYTHONPATH=src PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
  PY=${PY:-python3}
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  K=8
  base=""
  for W in 1 2 4 8; do
    rm -f /tmp/gpu-$W.db
    start=$(date +%s.%N)
    "$PY" -m steadytune.cli sweep --tasks rte --recipes mosbach2021 --seeds 1-$K --store /tmp/gpu-$W.db \
      --model $BUNDLE/minilm-fp16 --data-dir $BUNDLE/glue --train-limit 512 --set epochs=3 \
      --set device=cuda --set threads=1 --workers $W >/tmp/gpu-$W.log 2>&1 || { tail -20 /tmp/gpu-$W.log; exit 1; }
    wall=$(echo "$(date +%s.%N) - $start" | bc)
    [ -z "$base" ] && base=$wall
    echo "workers=$W runs=$K wall=${wall}s runs_per_min=$(echo "60*$K/$wall" | bc -l | cut -c1-6) speedup=$(echo "$base/$wall" | bc -l | cut -c1-5)"
  done
  "$PY" -m steadytune.cli summary /tmp/gpu-1.db --format csv | head -3
  "$PY" -m steadytune.cli summary /tmp/gpu-8.db --format csv | head -3
  ;;
*) echo "usage: bash bench/gpu.sh prepare|run" >&2; exit 2 ;;
esac
