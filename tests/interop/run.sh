#!/usr/bin/env bash
# ctest driver: peft writes, Python's safetensors reads and writes, peft reads. 77 = skipped.
set -euo pipefail
BIN=$1
SCRIPT=$(dirname "$0")/roundtrip.py
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
python3 -c "import numpy, safetensors" 2>/dev/null || { echo "SKIPPED: python3 with numpy and safetensors is not available"; exit 77; }
"$BIN" write "$DIR"
python3 "$SCRIPT" check "$DIR"
"$BIN" read "$DIR"
