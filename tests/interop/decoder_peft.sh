#!/usr/bin/env bash
# LoRA, DoRA, LN_TUNING, VERA, PROMPT_TUNING and PREFIX_TUNING adapters written by Hugging Face PEFT for SmolLM2,
# applied by peft-train (tests/interop/decoder_peft.py).
# Exit 77 (skipped) when the model or the Python packages (torch, transformers, peft) are missing.
# usage: decoder_peft.sh PEFT_TRAIN WORK_DIR [PYTHON]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
peft=$(realpath "$1") work=$2 py=${3:-python3}
"$py" -c "import torch, transformers, peft, gguf, accelerate" 2>/dev/null ||
  { echo "SKIPPED: $py cannot import torch, transformers, peft, gguf and accelerate"; exit 77; }
model=${PEFT_SMOLLM2_GGUF:-$("$here/../../scripts/find_smollm2.sh" 2>/dev/null || true)}
[ -n "$model" ] && [ -f "$model" ] || { echo "SKIPPED: SmolLM2 GGUF not found (scripts/find_smollm2.sh)"; exit 77; }
rm -rf "$work" && mkdir -p "$work"
"$py" "$here/decoder_peft.py" "$peft" "$model" "$work"
