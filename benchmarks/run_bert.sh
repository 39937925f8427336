#!/usr/bin/env bash
# Runs every BERT step configuration in its own process (so peak RSS is per configuration) and
# writes one JSON file per configuration plus a markdown table to stdout.
# Usage: benchmarks/run_bert.sh <build-dir> <out-dir>
set -euo pipefail
BUILD=${1:-build-bench}
OUT=${2:-bench-results}
mkdir -p "$OUT"
BIN="$BUILD/benchmarks/bench_bert_step"
for cfg in minilm/full minilm/lora minilm/bitfit minilm/houlsby bert_base/full bert_base/lora minilm/lora_bf16 bert_base/lora_bf16; do
  "$BIN" --benchmark_filter="^${cfg}/" --benchmark_format=json --benchmark_out="$OUT/${cfg//\//_}.json" \
    --benchmark_out_format=json >/dev/null
done
python3 - "$OUT" <<'PY'
import glob, json, sys
rows = []
for path in sorted(glob.glob(sys.argv[1] + "/*.json")):
    data = json.load(open(path))
    med = next(b for b in data["benchmarks"] if b.get("aggregate_name") == "median")
    rows.append(med)
print("| configuration | trainable params | ms / step (median of 3) | tokens / s | peak RSS MB | report MB (weights + grads + optimizer + activations) | peak / report |")
print("|---|---|---|---|---|---|---|")
for b in rows:
    name = b["run_name"].split("/iterations")[0]
    rep = b["report_total_mb"]
    ratio = b["peak_rss_mb"] / rep
    print(f"| {name} | {int(b['trainable_params']):,} | {b['real_time']:.0f} | {b['tokens_per_s']:.0f} | {b['peak_rss_mb']:.0f} | "
          f"{rep:.0f} ({b['report_weights_mb']:.0f} + {b['report_gradients_mb']:.0f} + "
          f"{b['report_optimizer_mb']:.0f} + {b['report_activations_mb']:.0f}) | {ratio:.2f} |")
PY
