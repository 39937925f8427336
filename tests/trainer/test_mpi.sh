#!/usr/bin/env bash
# `mpiexec -np 2 peft-train train` on the tiny model: the same adapter as one process (float, up to
# the order of sums), process 0 alone writes, a run stopped by two processes resumes in one, bad
# launches (processes given other options) and a process that dies stop the run with a message and
# no hang, and other commands refuse to run as several processes.
#
#   test_mpi.sh <peft-train> <make_tiny_model> <work dir> <mpiexec>
source "$(dirname "$0")/setup.sh"
MPI=$4
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
two=("$MPI" -np 2 --oversubscribe)
base=(train --model "$M" --train "$W/sst_train.tsv" --dev "$W/sst_dev.tsv" --method lora --rank 4 --alpha 8
      --target query,value --epochs 2 --batch-size 8 --seed 7 --threads 1 --no-plot)
run=("${base[@]}" --lr 5e-3)

# The largest difference between two adapters' tensors (the same names required).
compare() {
  python3 - "$1/adapter/adapter_model.safetensors" "$2/adapter/adapter_model.safetensors" <<'PY'
import json, struct, sys
def load(p):
    raw = open(p, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    out = {}
    for k, v in head.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = struct.unpack("<%df" % ((b - a) // 4), raw[8 + n + a:8 + n + b])
    return out
x, y = load(sys.argv[1]), load(sys.argv[2])
assert x.keys() == y.keys(), (x.keys(), y.keys())
print(max(abs(p - q) for k in x for p, q in zip(x[k], y[k])))
PY
}

"$TRAIN" "${run[@]}" -o "$W/one" >"$W/one.out" 2>"$W/one.err" || fail "one process: $(tail -3 "$W/one.err")"
if "${two[@]}" "$TRAIN" "${run[@]}" -o "$W/two" >"$W/two.out" 2>"$W/two.err"; then
  d=$(compare "$W/one" "$W/two")
  python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < 1e-4 else 1)" "$d" &&
    pass "2 processes train the adapter 1 process trains (largest difference $d; float sums in another order)" ||
    fail "2 processes differ from 1 by $d"
  grep -q "data parallel: 2 processes" "$W/two.err" || fail "no note on the data-parallel run"
  [[ $(grep -c "== peft-train summary" "$W/two.out") == 1 ]] || fail "the summary was printed $(grep -c "== peft-train summary" "$W/two.out") times"
  python3 - "$W/one/summary.json" "$W/two/summary.json" <<'PY' && pass "the same dev score and steps" || fail "summaries differ"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
assert a["steps"] == b["steps"] and abs(a["dev"]["accuracy"] - b["dev"]["accuracy"]) < 1e-9, (a["dev"], b["dev"])
PY
  [[ ! -e "$W/two/run.partial" && ! -e "$W/two/.lock" ]] || fail "the run left run.partial/ or a lock behind"
else
  fail "two processes: $(tail -5 "$W/two.err")"
fi

# Stopped as two processes (as Ctrl-C would), resumed as one: the uninterrupted run's adapter.
"${two[@]}" "$TRAIN" "${run[@]}" -o "$W/res" --interrupt-after 20 >/dev/null 2>"$W/res.err"
status=$?
[[ $status == 130 ]] || fail "the interrupted two-process run exited $status: $(tail -3 "$W/res.err")"
if "$TRAIN" "${run[@]}" -o "$W/res" --resume >/dev/null 2>"$W/res2.err"; then
  d=$(compare "$W/one" "$W/res")
  python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < 1e-4 else 1)" "$d" &&
    pass "a run stopped by 2 processes resumes in 1 (largest difference from the uninterrupted run $d)" ||
    fail "resumed run differs by $d"
else
  fail "resume in one process: $(tail -3 "$W/res2.err")"
fi

# Bad launches and a dying process: an error, quickly, with a message.
expect_mpi_error() {  # expect_mpi_error <name> <regex> <command...>
  local name=$1 pattern=$2
  shift 2
  rm -rf "$W/bad"
  local start=$SECONDS
  if timeout 120 "$@" >"$W/bad.out" 2>"$W/bad.err"; then
    fail "$name: exited 0"
  elif ((SECONDS - start >= 120)); then
    fail "$name: still running after 120 s"
  elif ! grep -Eq -- "$pattern" "$W/bad.err"; then
    fail "$name: message '$(head -5 "$W/bad.err")' does not match '$pattern'"
  else
    pass "$name ($((SECONDS - start)) s): $(grep -Em1 -- "$pattern" "$W/bad.err")"
  fi
}
cat >"$W/other_lr.sh" <<EOF
#!/bin/sh
lr=5e-3; [ "\$OMPI_COMM_WORLD_RANK" = 1 ] && lr=1e-2
exec "$TRAIN" ${base[*]} -o "$W/bad" --lr \$lr
EOF
chmod +x "$W/other_lr.sh"
expect_mpi_error "processes started with other options" "process 1 was started with other options" "${two[@]}" "$W/other_lr.sh"
expect_mpi_error "a process that dies" "exited on signal|non-zero status|exit code|returned a non-zero" \
  "${two[@]}" "$TRAIN" "${run[@]}" -o "$W/bad" --crash-after 3
expect_mpi_error "eval as two processes" "only 'train' runs as several processes" \
  "${two[@]}" "$TRAIN" eval --model "$M" --adapter "$W/one/adapter" --data "$W/sst_dev.tsv"

if ((failures)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all data-parallel peft-train checks passed"
