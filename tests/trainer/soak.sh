#!/usr/bin/env bash
# trainer.soak: 10 epochs of the tiny model (make_tiny_model) through scripts/soak.sh: no memory
# growth after the first epochs.
#
#   soak.sh <peft-train> <make_tiny_model> <work dir>
set -euo pipefail
rm -rf "$3" && mkdir -p "$3"
"$2" "$3" >/dev/null
"$(dirname "$0")/../../scripts/soak.sh" "$1" "$3/model" "$3/sst_train.tsv" 10 "$3/run" --dev "$3/sst_dev.tsv" --threads 2 \
  --batch-size 8 --method lora
