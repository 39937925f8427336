#!/usr/bin/env bash
# The trainer's TensorBoard scalars, read back by TensorBoard itself: a peft-train run on the tiny
# model writes events and metrics.jsonl; every train/loss step and every dev/* value must equal what
# the JSON-lines log says (to float32), and the event files must pass the TFRecord CRC checks.
#
#   tensorboard_trainer.sh <peft-train> <make_tiny_model> <work dir> <python>   (exit 77: no tensorboard)
set -uo pipefail
TRAIN=$1 MAKE=$2 W=$3 PY=$4
HERE=$(cd "$(dirname "$0")" && pwd)
"$PY" -c "import tensorboard" 2>/dev/null || { echo "SKIP: $PY cannot import tensorboard"; exit 77; }
rm -rf "$W" && mkdir -p "$W"
"$MAKE" "$W" >/dev/null || { echo "make_tiny_model failed"; exit 1; }
"$TRAIN" train --model "$W/model" --train "$W/sst_train.tsv" --dev "$W/sst_dev.tsv" -o "$W/run" --method lora --epochs 2 \
  --batch-size 16 --log-every 1 --threads 2 --seed 3 --tensorboard "$W/run/tb" --no-plot >/dev/null 2>"$W/train.err" ||
  { echo "training failed: $(tail -3 "$W/train.err")"; exit 1; }
"$PY" "$HERE/tensorboard_check.py" "$W/run/tb" >"$W/scalars.tsv" || { echo "tensorboard could not read the events"; exit 1; }
"$PY" - "$W/scalars.tsv" "$W/run/metrics.jsonl" <<'PY'
import json, struct, sys
f32 = lambda x: struct.unpack("<f", struct.pack("<f", x))[0]
scalars = {}
for line in open(sys.argv[1]):
    tag, step, value = line.rstrip("\n").split("\t")
    scalars[(tag, int(step))] = float(value)
expected = {}
for r in map(json.loads, open(sys.argv[2])):
    if r["event"] == "train":
        expected[("train/loss", r["step"])] = r["loss"]
    else:
        for k in ("accuracy", "loss"):
            expected[("dev/" + k, r["step"])] = r[k]
missing = [k for k in expected if k not in scalars]
wrong = [(k, scalars[k], v) for k, v in expected.items() if k in scalars and scalars[k] != f32(v)]
steps = sorted(s for t, s in scalars if t == "train/loss")
assert not missing, f"not in the event files: {missing[:5]}"
assert not wrong, f"values differ: {wrong[:5]}"
assert steps == list(range(1, len(steps) + 1)), steps
lr = sorted(s for t, s in scalars if t == "train/lr")
assert lr == steps, "train/lr missing at some steps"
print(f"ok: {len(steps)} steps of train/loss, lr, grad_norm and {sum(t.startswith('dev/') for t, _ in scalars)} dev scalars match metrics.jsonl")
PY
