#!/usr/bin/env bash
# Hugging Face PEFT and transformers (Python) against peft-train, on the tiny BERT of make_tiny_model:
# PEFT loads peft-train's LoRA, DoRA, ADALORA, VERA, IA3, LN_TUNING, PROMPT_TUNING and PREFIX_TUNING adapters (sequence and token classification, rsLoRA) and predicts what
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
# (IA)3: key and value scale their output, the FFN output projection its input.
quiet "$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" --dev "$W/sst_dev.tsv" -o "$W/ia3" --method ia3 \
  --epochs 6 --lr 5e-2
quiet "$TRAIN" eval --model "$W/model" --adapter "$W/ia3/adapter" --data "$W/sst_dev.tsv" --predictions "$W/ia3_pred.tsv"
quiet "$TRAIN" merge --model "$W/model" --adapter "$W/ia3/adapter" -o "$W/ia3_merged"
# DoRA on query and value, trained with LoRA dropout (the path with one more weight product).
quiet "$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" --dev "$W/sst_dev.tsv" -o "$W/dora" --method lora --dora \
  --rank 4 --alpha 8 --target query,value --epochs 6 --lr 1e-2
quiet "$TRAIN" eval --model "$W/model" --adapter "$W/dora/adapter" --data "$W/sst_dev.tsv" --predictions "$W/dora_pred.tsv"
quiet "$TRAIN" merge --model "$W/model" --adapter "$W/dora/adapter" -o "$W/dora_merged"
# LayerNorm tuning: every layer norm's scale and shift.
quiet "$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" --dev "$W/sst_dev.tsv" -o "$W/ln" --method ln_tuning \
  --epochs 6 --lr 1e-2
quiet "$TRAIN" eval --model "$W/model" --adapter "$W/ln/adapter" --data "$W/sst_dev.tsv" --predictions "$W/ln_pred.tsv"
quiet "$TRAIN" merge --model "$W/model" --adapter "$W/ln/adapter" -o "$W/ln_merged"
# AdaLoRA on query, value and the FFN input, pruned from 6 to 3 triplets per module on average.
quiet "$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" --dev "$W/sst_dev.tsv" -o "$W/ada" --method adalora \
  --adalora-init-r 6 --adalora-target-r 3 --adalora-tfinal 5 --adalora-alpha 12 --adalora-target query,value,ffn_in --epochs 6 --lr 1e-2
quiet "$TRAIN" eval --model "$W/model" --adapter "$W/ada/adapter" --data "$W/sst_dev.tsv" --predictions "$W/ada_pred.tsv"
quiet "$TRAIN" merge --model "$W/model" --adapter "$W/ada/adapter" -o "$W/ada_merged"
# VeRA on query, value and the FFN input (32 x 32 and 32 -> 64 layers: one shared pair, sliced).
quiet "$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" --dev "$W/sst_dev.tsv" -o "$W/vera" --method vera \
  --vera-rank 16 --vera-target query,value,ffn_in --vera-dropout 0.1 --epochs 6 --lr 2e-2
quiet "$TRAIN" eval --model "$W/model" --adapter "$W/vera/adapter" --data "$W/sst_dev.tsv" --predictions "$W/vera_pred.tsv"
quiet "$TRAIN" merge --model "$W/model" --adapter "$W/vera/adapter" -o "$W/vera_merged"
# Prompt tuning (sequence and token classification) and prefix tuning through its MLP; neither merges.
quiet "$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" --dev "$W/sst_dev.tsv" -o "$W/prompt" --method prompt \
  --virtual-tokens 4 --epochs 6 --lr 3e-2
quiet "$TRAIN" eval --model "$W/model" --adapter "$W/prompt/adapter" --data "$W/sst_dev.tsv" --predictions "$W/prompt_pred.tsv"
if "$TRAIN" merge --model "$W/model" --adapter "$W/prompt/adapter" -o "$W/prompt_merged" >"$W/merge.log" 2>&1 ||
  ! grep -q "cannot be merged" "$W/merge.log" || [ -e "$W/prompt_merged" ]; then
  echo "FAIL: merging a prompt-tuning adapter was not refused cleanly"; cat "$W/merge.log"; exit 1
fi
echo "ok: merging prompt tuning is refused: $(grep -o "method 'prompt_tuning' cannot be merged[^;]*" "$W/merge.log")"
quiet "$TRAIN" train "${common[@]}" --train "$W/ner_train.conll" --dev "$W/ner_dev.conll" -o "$W/prompt_tok" --method prompt \
  --virtual-tokens 3 --epochs 4 --lr 3e-2
quiet "$TRAIN" eval --model "$W/model" --adapter "$W/prompt_tok/adapter" --data "$W/ner_dev.conll" --predictions "$W/prompt_tok_pred.tsv"
quiet "$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" --dev "$W/sst_dev.tsv" -o "$W/prefix" --method prefix \
  --virtual-tokens 3 --prefix-projection --prefix-hidden 16 --epochs 6 --lr 1e-2
quiet "$TRAIN" eval --model "$W/model" --adapter "$W/prefix/adapter" --data "$W/sst_dev.tsv" --predictions "$W/prefix_pred.tsv"

# The other way: PEFT writes LoRA adapters; peft-train evaluates one as it is (no run card: the task,
# LoRA settings and labels come from its files) and refuses the one without a trained head.
"$PY" "$SCRIPT" write "$W"
quiet "$TRAIN" eval --model "$W/model" --adapter "$W/py_adapter" --data "$W/sst_dev.tsv" --predictions "$W/py_pred.tsv"
grep -q "no peft_train.json; from its PEFT files: task sequence, lora (r=4, alpha=12" "$W/last.log" ||
  { echo "FAIL: no note on the derived run card"; cat "$W/last.log"; exit 1; }
if "$TRAIN" eval --model "$W/model" --adapter "$W/py_adapter_nohead" --data "$W/sst_dev.tsv" >"$W/nohead.log" 2>&1 ||
  ! grep -q "has no classifier head" "$W/nohead.log"; then
  echo "FAIL: an adapter without its head was not refused clearly"; cat "$W/nohead.log"; exit 1
fi
echo "ok: a PEFT adapter without the trained head is refused: $(grep -o 'has no classifier head[^;]*' "$W/nohead.log")"
# PEFT's LoRA on "dense", which matches the pooler as well.
quiet "$TRAIN" eval --model "$W/model" --adapter "$W/py_dense" --data "$W/sst_dev.tsv" --predictions "$W/py_dense_pred.tsv"
# PEFT's own IA3 adapter with its BERT defaults (attention.output.dense scaled too), read as it is.
quiet "$TRAIN" eval --model "$W/model" --adapter "$W/py_ia3" --data "$W/sst_dev.tsv" --predictions "$W/py_ia3_pred.tsv"
grep -q "no peft_train.json; from its PEFT files: task sequence, ia3" "$W/last.log" ||
  { echo "FAIL: no note on the IA3 adapter's derived run card"; cat "$W/last.log"; exit 1; }
# PEFT's DoRA adapter (magnitudes moved off the base norms), read as it is.
quiet "$TRAIN" eval --model "$W/model" --adapter "$W/py_dora" --data "$W/sst_dev.tsv" --predictions "$W/py_dora_pred.tsv"
grep -q "DoRA" "$W/last.log" || { echo "FAIL: the DoRA adapter's run card does not say DoRA"; cat "$W/last.log"; exit 1; }
# PEFT's LN_TUNING adapter on every LayerNorm, read as it is.
quiet "$TRAIN" eval --model "$W/model" --adapter "$W/py_ln" --data "$W/sst_dev.tsv" --predictions "$W/py_ln_pred.tsv"
grep -q "from its PEFT files: task sequence, ln_tuning" "$W/last.log" ||
  { echo "FAIL: no note on the LN_TUNING adapter's derived run card"; cat "$W/last.log"; exit 1; }
# PEFT's ADALORA adapter with a rank pattern, read as it is.
quiet "$TRAIN" eval --model "$W/model" --adapter "$W/py_ada" --data "$W/sst_dev.tsv" --predictions "$W/py_ada_pred.tsv"
grep -q "from its PEFT files: task sequence, adalora (init_r=4" "$W/last.log" ||
  { echo "FAIL: no note on the ADALORA adapter's derived run card"; cat "$W/last.log"; exit 1; }
# PEFT's VERA adapter on query, value and every output.dense, read as it is.
quiet "$TRAIN" eval --model "$W/model" --adapter "$W/py_vera" --data "$W/sst_dev.tsv" --predictions "$W/py_vera_pred.tsv"
grep -q "from its PEFT files: task sequence, vera (r=8" "$W/last.log" ||
  { echo "FAIL: no note on the VERA adapter's derived run card"; cat "$W/last.log"; exit 1; }
# PEFT's PROMPT_TUNING and PREFIX_TUNING adapters, read as they are.
quiet "$TRAIN" eval --model "$W/model" --adapter "$W/py_prompt" --data "$W/sst_dev.tsv" --predictions "$W/py_prompt_pred.tsv"
grep -q "from its PEFT files: task sequence, prompt_tuning (5 virtual tokens" "$W/last.log" ||
  { echo "FAIL: no note on the PROMPT_TUNING adapter's derived run card"; cat "$W/last.log"; exit 1; }
quiet "$TRAIN" eval --model "$W/model" --adapter "$W/py_prefix" --data "$W/sst_dev.tsv" --predictions "$W/py_prefix_pred.tsv"
grep -q "from its PEFT files: task sequence, prefix_tuning (3 virtual tokens" "$W/last.log" ||
  { echo "FAIL: no note on the PREFIX_TUNING adapter's derived run card"; cat "$W/last.log"; exit 1; }

"$PY" "$SCRIPT" check "$W"
