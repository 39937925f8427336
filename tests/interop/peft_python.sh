#!/usr/bin/env bash
# Hugging Face PEFT and transformers (Python) against peft-train, on the tiny BERT of make_tiny_model:
# PEFT loads peft-train's LoRA adapters (sequence and token classification, rsLoRA) and predicts what
# peft-train predicts; transformers loads peft-train's merged model; PEFT's merge_and_unload equals
# peft-train merge; peft-train evaluates an adapter written by PEFT as PEFT does. Skipped (77) where
# torch, transformers and peft are not installed: they are large, so CI does not install them.
#
#   peft_python.sh <peft-train> <make_tiny_model> <work dir> [python]
set -euo pipefail
TRAIN=$1
MAKE=$2
W=$3
PY=${4:-python3}
SCRIPT=$(dirname "$0")/peft_python.py
"$PY" -c "import torch, transformers, peft" 2>/dev/null ||
  { echo "SKIPPED: $PY cannot import torch, transformers and peft"; exit 77; }
rm -rf "$W" && mkdir -p "$W"
"$MAKE" "$W" >/dev/null
common=(--model "$W/model" --threads 2 --batch-size 8 --seed 7 --no-plot)
quiet() { "$@" >"$W/last.log" 2>&1 || { cat "$W/last.log"; exit 1; }; }

quiet "$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" --dev "$W/sst_dev.tsv" -o "$W/seq" --method lora \
  --rank 8 --alpha 16 --target all --epochs 6 --lr 1e-2
quiet "$TRAIN" eval --model "$W/model" --adapter "$W/seq/adapter" --data "$W/sst_dev.tsv" --predictions "$W/seq_pred.tsv"
quiet "$TRAIN" merge --model "$W/model" --adapter "$W/seq/adapter" -o "$W/merged"
quiet "$TRAIN" train "${common[@]}" --train "$W/ner_train.conll" --dev "$W/ner_dev.conll" -o "$W/tok" --method lora \
  --rank 4 --alpha 8 --target all --rslora --epochs 4 --lr 1e-2
quiet "$TRAIN" eval --model "$W/model" --adapter "$W/tok/adapter" --data "$W/ner_dev.conll" --predictions "$W/tok_pred.tsv"

# The other way: PEFT writes a LoRA adapter; peft-train evaluates it, given a run card for the task.
"$PY" "$SCRIPT" write "$W"
"$PY" - "$W/seq/adapter/peft_train.json" "$W/py_adapter/peft_train.json" <<'PY'
import json, sys
card = json.load(open(sys.argv[1]))
card["lora"].update(r=4, alpha=12.0, dropout=0.0, targets="query,key,attention_output,ffn_in,ffn_out",
                    target_modules=r"(.*\.)?(query|key|intermediate\.dense|output\.dense)")
json.dump(card, open(sys.argv[2], "w"), indent=2)
PY
quiet "$TRAIN" eval --model "$W/model" --adapter "$W/py_adapter" --data "$W/sst_dev.tsv" --predictions "$W/py_pred.tsv"

"$PY" "$SCRIPT" check "$W"
