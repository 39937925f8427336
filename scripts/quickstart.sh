#!/usr/bin/env bash
# Installs what is missing, builds the library's examples and runs the main one: LoRA on an MLP.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
peft_install_deps

BUILD=${PEFT_BUILD_DIR:-build}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DPEFT_BUILD_EXAMPLES=ON >/dev/null
cmake --build "$BUILD" -j"${PEFT_JOBS:-2}" --target 01_lora_mlp
echo "== examples/01_lora_mlp"
"$BUILD/examples/01_lora_mlp"
