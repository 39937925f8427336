#!/usr/bin/env bash
# Data-parallel scaling on this machine: all-MiniLM-L6-v2 with LoRA (r 8, query and value) on SST-2,
# batch 16, 40 optimizer steps, as 1 process x 1 thread and as 2 processes x 1 thread (mpiexec), in
# interleaved rounds (and 1 process x 2 threads for comparison); prints ms per step (median of the rounds), the speed-up, and the bytes each
# process sends per step, and writes them as JSON. Needs a build with MPI (openmpi-bin,
# libopenmpi-dev).
#
#   benchmarks/data_parallel.sh [rounds]      # default 3; writes $BUILD/data_parallel.json
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
BUILD=${PEFT_BUILD_DIR:-build}
ROUNDS=${1:-3}
MODEL=$(scripts/find_minilm.sh)
peft_build_trainer "$BUILD"
TRAIN="$BUILD/examples/peft-train"
MPIEXEC=$(command -v mpiexec) || { echo "mpiexec not found: install openmpi-bin"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
OUT="$BUILD/data-parallel-bench"
rm -rf "$OUT" && mkdir -p "$OUT"
run=(train --model "$MODEL" --train data/sst2/train.tsv --method lora --rank 8 --alpha 16 --target query,value
     --lr 1e-3 --batch-size 16 --epochs 1 --max-steps 40 --seed 42 --no-plot --overwrite)
for ((r = 0; r < ROUNDS; ++r)); do
  "$TRAIN" "${run[@]}" --threads 1 -o "$OUT/one_$r" >/dev/null 2>"$OUT/one_$r.log"
  "$MPIEXEC" -np 2 "$TRAIN" "${run[@]}" --threads 1 -o "$OUT/two_$r" >/dev/null 2>"$OUT/two_$r.log"
  "$TRAIN" "${run[@]}" --threads 2 -o "$OUT/threads_$r" >/dev/null 2>"$OUT/threads_$r.log"
done
python3 - "$OUT" "$ROUNDS" "$BUILD/data_parallel.json" <<'PY'
import json, statistics, sys
out, rounds, dest = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def ms_per_step(kind):
    vals = []
    for r in range(rounds):
        s = json.load(open(f"{out}/{kind}_{r}/summary.json"))
        vals.append(1000 * s["train_seconds"] / s["steps"])
    return statistics.median(vals), vals, s
one, one_all, s = ms_per_step("one")
two, two_all, _ = ms_per_step("two")
threads, threads_all, _ = ms_per_step("threads")
trainable = s["trainable_params"]
sent = 2 * 8 * trainable  # doubles: the reduction to process 0, then the broadcast back
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
result = {"cpu": cpu, "model": "all-MiniLM-L6-v2", "method": "LoRA r8 query,value", "batch": 16, "steps": s["steps"],
          "one_process_ms_per_step": one, "two_processes_ms_per_step": two, "speedup": one / two,
          "one_process_two_threads_ms_per_step": threads, "rounds_one": one_all, "rounds_two": two_all, "rounds_threads": threads_all, "trainable_params": trainable, "bytes_per_process_per_step": sent}
json.dump(result, open(dest, "w"), indent=2)
print(f"CPU: {cpu}")
print("| processes x threads | ms/step (median of %d) | speed-up | bytes sent per process per step |" % rounds)
print("|---|---:|---:|---:|")
print(f"| 1 x 1 | {one:.0f} | 1.00 | 0 |")
print(f"| 2 x 1 | {two:.0f} | {one / two:.2f} | {sent:,} ({trainable:,} trainable values x 8 bytes, to process 0 and back) |")
print(f"| 1 x 2 (OpenMP threads, for comparison) | {threads:.0f} | {one / threads:.2f} | 0 |")
PY
