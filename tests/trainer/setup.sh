# Sourced by the peft-train test scripts (test_trainer.sh, hostile.sh) with their arguments
# <peft-train> <make_tiny_model> <work dir>: a fresh work dir holding the tiny model and its data,
# and the pass/fail bookkeeping (the caller ends with `finish`).
set -uo pipefail
TRAIN=$1
MAKE=$2
W=$3
rm -rf "$W" && mkdir -p "$W"
"$MAKE" "$W" >/dev/null || { echo "make_tiny_model failed"; exit 1; }
M="$W/model"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }
