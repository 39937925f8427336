#!/usr/bin/env bash
# peft-train's decoder against the numpy reference (tests/decoder/parity.py) on SmolLM2-135M-Instruct.
# Exit 77 (skipped) when the model cannot be found or installed, or Python lacks numpy / gguf.
# usage: parity.sh PEFT_TRAIN WORK_DIR [PYTHON]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
peft=$(realpath "$1") work=$2 py=${3:-python3}
"$py" -c "import numpy, gguf" 2>/dev/null || { echo "skipped: Python lacks numpy or gguf"; exit 77; }
model=${PEFT_SMOLLM2_GGUF:-$("$here/../../scripts/find_smollm2.sh" 2>/dev/null || true)}
[ -n "$model" ] && [ -f "$model" ] || { echo "skipped: SmolLM2 GGUF not found (scripts/find_smollm2.sh)"; exit 77; }
rm -rf "$work" && mkdir -p "$work" && cd "$work"
"$py" "$here/parity.py" "$peft" "$model" "$here/perplexity.txt"
