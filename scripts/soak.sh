#!/usr/bin/env bash
# Soak test: a long training run with the resident memory of every train record (metrics.jsonl's
# rss_mb), printed per epoch; fails when memory grows after the first two epochs (by more than
# SLACK_MB, 2 by default, for allocator noise). One epoch instead reports the growth over its second
# half (a benchmark of a real model, not a pass/fail check).
#
#   scripts/soak.sh <peft-train> <model dir> <train file> <epochs> <work dir> [more train options]
#   e.g. scripts/soak.sh build/examples/peft-train "$(scripts/find_minilm.sh)" data/sst2/train.tsv 1 /tmp/soak
set -euo pipefail
TRAIN=$1 MODEL=$2 DATA=$3 EPOCHS=$4 W=$5
shift 5
SLACK_MB=${SLACK_MB:-2}
rm -rf "$W"
"$TRAIN" train --model "$MODEL" --train "$DATA" -o "$W" --epochs "$EPOCHS" --log-every 5 --no-plot "$@" >/dev/null 2>"$W.err" ||
  { tail -5 "$W.err"; exit 1; }
python3 - "$W/metrics.jsonl" "$EPOCHS" "$SLACK_MB" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
train = [r for r in rows if r["event"] == "train"]
epochs, slack = int(sys.argv[2]), float(sys.argv[3])
by_epoch = {}
for r in train:
    by_epoch.setdefault(r["epoch"], []).append(r["rss_mb"])
print("epoch  records  rss_mb min   max")
for e, v in sorted(by_epoch.items()):
    print(f"{e:5d}  {len(v):7d}  {min(v):10.1f} {max(v):6.1f}")
if epochs == 1:
    v = by_epoch[1]
    half = v[len(v) // 2:]
    print(f"second half of the epoch: {half[0]:.1f} -> {half[-1]:.1f} MB (growth {half[-1] - half[0]:+.1f} MB, max {max(half):.1f})")
    sys.exit(0)
baseline = max(x for e, v in by_epoch.items() if e <= 2 for x in v)
later = max(x for e, v in by_epoch.items() if e > 2 for x in v)
print(f"max after epoch 2: {later:.1f} MB; max in epochs 1-2: {baseline:.1f} MB; allowed growth {slack} MB")
if later > baseline + slack:
    print("FAIL: resident memory grows after the first epochs")
    sys.exit(1)
print("ok: no growth")
PY
