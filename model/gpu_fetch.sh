#!/usr/bin/env bash
# Reassemble a checkpoint returned by model/gpu_train.sh: gpu_fetch.sh FILES_AT DEST
set -euo pipefail
src=$1; dest=$2
mkdir -p "$dest"
cat "$src"/model.safetensors.part-* > "$dest/model.safetensors"
cp "$src/config.json" "$src/train_state.json" "$dest/"
cp "$(dirname "$0")/tokenizer.json" "$dest/tokenizer.json"
python3 -c "import json,sys; s=json.load(open('$dest/train_state.json')); print('step', s['step'], 'tokens_total', s['tokens_total'])"
