#!/usr/bin/env bash
# Train the default model on a lent GPU machine (H200) for about 9 minutes and
# return the checkpoint through $OUT. Run from the repository root there:
#
#   device run: bash model/gpu_train.sh        (carry: runs/gpu-init when resuming a CPU run)
#
# It builds the corpus from that machine's own Python packages with the tokenizer
# committed in model/, resumes from INIT (default: the committed checkpoint in
# model/default, else runs/gpu-init, else a new model), trains STAGE for MINUTES,
# and writes the checkpoint (weights split in 15 MB parts: $OUT takes files of at
# most 16 MiB) plus the log to $OUT. Reassemble here with model/gpu_fetch.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
MINUTES=${MINUTES:-9}
STAGE=${STAGE:-diffusion}
TOKENS=${TOKENS:-600e6}       # schedule length: longer than one run, so later runs continue the cosine
BATCH=${BATCH:-64}
SEQ=${SEQ:-1024}
WORKERS=${WORKERS:-12}
CORPUS_MB=${CORPUS_MB:-300}
OUT=${OUT:-/tmp/gpu-out}
WORK=${WORK:-/tmp/seed-gpu}
mkdir -p "$OUT" "$WORK"

INIT=${INIT:-}
if [ -z "$INIT" ]; then
  for candidate in model/default runs/gpu-init; do
    if [ -f "$candidate/model.safetensors" ]; then INIT=$candidate; break; fi
  done
fi
if [ -n "$INIT" ] && ls "$INIT"/model.safetensors.part-* >/dev/null 2>&1; then
  cat "$INIT"/model.safetensors.part-* > "$INIT/model.safetensors"
fi

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
"$PY" -c "import torch, tokenizers, safetensors; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

t0=$(date +%s)
"$PY" -m seed_lsp corpus build --out "$WORK/corpus" --max-mb "$CORPUS_MB" 2>&1 | grep -v '^tokenize' | tail -15
echo "corpus built in $(( $(date +%s) - t0 )) s"

args=(--stage "$STAGE" --corpus "$WORK/corpus" --out "$WORK/run" --tokens "$TOKENS"
      --max-minutes "$MINUTES" --batch-size "$BATCH" --seq-len "$SEQ" --workers "$WORKERS"
      --compile --no-progress --eval-every 250 --save-minutes 3 --warmup-steps 100 --lr "${LR:-2e-3}")
[ -n "$INIT" ] && args+=(--init "$INIT") && echo "starting from $INIT"
"$PY" -m seed_lsp train "${args[@]}" 2>&1 | tee "$OUT/train.out" | grep -v '^  B=' | tail -40 || true

run="$WORK/run"
split -b 15000000 -d "$run/model.safetensors" "$OUT/model.safetensors.part-"
cp "$run/config.json" "$run/train_state.json" "$OUT/"
cp "$run/train.log" "$OUT/train.log" 2>/dev/null || true
ls -la "$OUT"
