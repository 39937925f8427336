#!/usr/bin/env bash
# The hostile-use catalogue of peft-train: each case is something a careless or hostile user does
# (or a failing disk, a killed run, a damaged file), and asserts the exit code, that the message names
# what was wrong (file, key, line), and that nothing was written or replaced. Grouped as
# docs/reliability.md describes them; add a case with every new parser, option or command.
#
#   hostile.sh <peft-train> <make_tiny_model> <work dir>
source "$(dirname "$0")/setup.sh"
common=(--model "$M" --threads 2 --batch-size 8 --seed 7 --no-plot)
# Peak-memory bounds hold for a normal build; AddressSanitizer's shadow memory raises them (scripts/sanitize.sh).
rss_bound() { if [[ -n ${PEFT_SANITIZED:-} ]]; then echo 100000000; else echo "$1"; fi; }
run() { "$TRAIN" "$@" >"$W/out" 2>"$W/err"; }
# expect_error <name> <regex> <path that must not exist afterwards, or -> <args...>
expect_error() {
  local name=$1 pattern=$2 absent=$3
  shift 3
  [[ $absent != - ]] && rm -rf "$absent"
  if run "$@"; then
    fail "$name: exited 0"
  elif ! grep -Eq -- "$pattern" "$W/err"; then
    fail "$name: message '$(head -3 "$W/err")' does not match '$pattern'"
  elif [[ $absent != - && -e $absent ]]; then
    fail "$name: left $absent behind"
  else
    pass "$name: $(grep -m1 error "$W/err")"
  fi
}
# The files of a result (not a run's state in run.partial/, not hidden temporaries), with their hashes.
digest() { (cd "$1" && find . -path ./run.partial -prune -o -type f ! -name '.*' -print0 | sort -z | xargs -0 sha256sum); }

# A finished run to attack.
"$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" --dev "$W/sst_dev.tsv" -o "$W/run" --method lora --epochs 1 \
  >/dev/null 2>"$W/run.err" || { echo "baseline training failed: $(tail -3 "$W/run.err")"; exit 1; }
"$TRAIN" train "${common[@]}" --train "$W/ner_train.conll" -o "$W/ner" --method lora --epochs 1 >/dev/null 2>&1 ||
  { echo "baseline tagging run failed"; exit 1; }
A="$W/run/adapter"

# ---- 1. outputs: what a path points to is written through or kept, never destroyed ----------------
"$TRAIN" eval --model "$M" --adapter "$A" --data "$W/sst_dev.tsv" --predictions "$W/pred.tsv" >/dev/null 2>&1 || fail "eval"
ln -s "$W/pred.tsv" "$W/pred.link"
"$TRAIN" eval --model "$M" --adapter "$A" --data "$W/sst_dev.tsv" --predictions "$W/pred.link" >/dev/null 2>&1 || fail "eval onto a link"
[[ -L "$W/pred.link" && -s "$W/pred.tsv" ]] && pass "a symlinked --predictions stays a link to the rewritten file" ||
  fail "the symlink was replaced"
mkdir -p "$W/adir"
expect_error "--predictions onto a directory" "is a directory" - eval --model "$M" --adapter "$A" --data "$W/sst_dev.tsv" --predictions "$W/adir"
cp "$W/sst_dev.tsv" "$W/dev_copy.tsv"
expect_error "--predictions over the data file" "is the --data file" - \
  eval --model "$M" --adapter "$A" --data "$W/dev_copy.tsv" --predictions "$W/dev_copy.tsv"
cmp -s "$W/sst_dev.tsv" "$W/dev_copy.tsv" || fail "the data file was overwritten"

# ---- 2. NaN and infinity: never loaded, saved or printed as a result --------------------------------
poison() {  # poison <in.safetensors> <out.safetensors> <tensor name part>: its first value becomes NaN
  python3 - "$@" <<'PY'
import json, struct, sys
raw = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
name = next(k for k in sorted(header) if k != "__metadata__" and sys.argv[3] in k)
b = 8 + n + header[name]["data_offsets"][0]
raw[b:b + 4] = struct.pack("<f", float("nan"))
open(sys.argv[2], "wb").write(raw)
PY
}
cp -r "$A" "$W/nan_adapter" && poison "$A/adapter_model.safetensors" "$W/nan_adapter/adapter_model.safetensors" lora_B
expect_error "merge of a NaN adapter" "adapter_model.safetensors': tensor '.*lora_B.*' holds 1 NaN or infinite" "$W/merged_nan" \
  merge --model "$M" --adapter "$W/nan_adapter" -o "$W/merged_nan"
expect_error "predict with a NaN adapter" "holds 1 NaN or infinite" - predict --model "$M" --adapter "$W/nan_adapter" --input "$W/sst_dev.tsv"
[[ ! -s "$W/out" ]] || fail "predict printed output with a NaN adapter"
mkdir -p "$W/nan_model" && cp "$M"/* "$W/nan_model/" && poison "$M/model.safetensors" "$W/nan_model/model.safetensors" query.weight
expect_error "eval of a NaN base model" "model.safetensors': tensor '.*query.weight' holds 1 NaN" - \
  eval --model "$W/nan_model" --adapter "$A" --data "$W/sst_dev.tsv"
expect_error "training from a NaN base model" "holds 1 NaN" "$W/bad" train "${common[@]/$M/$W/nan_model}" --train "$W/sst_train.tsv" -o "$W/bad"
expect_error "a learning rate that diverges" "training stopped at step [0-9]+: .*not finite" "$W/bad" \
  train "${common[@]}" --train "$W/sst_train.tsv" -o "$W/bad" --lr 1e300 --max-steps 3

# ---- 3. limits -----------------------------------------------------------------------------------------
expect_error "--threads 100000" "--threads 100000 is more than 4 x the [0-9]+ CPUs" "$W/bad" \
  train --model "$M" --train "$W/sst_train.tsv" -o "$W/bad" --threads 100000
expect_error "--adapter-size 1e8" "bottleneck 100000000 exceeds the layer's width 32" "$W/bad" \
  train "${common[@]}" --train "$W/sst_train.tsv" -o "$W/bad" --method houlsby --adapter-size 100000000

# ---- 4. overwrite, locks, leftovers: the previous result survives until the new one is complete -------
before=$(digest "$W/run")
expect_error "a second run without --overwrite" "already holds a run; pass --overwrite" - \
  train "${common[@]}" --train "$W/sst_train.tsv" -o "$W/run"
"$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" -o "$W/run" --overwrite --epochs 2 --interrupt-after 3 >/dev/null 2>&1
rc=$?
[[ $rc -eq 130 && $(digest "$W/run") == "$before" && -s "$W/run/run.partial/checkpoint.safetensors" ]] &&
  pass "--overwrite interrupted: the previous adapter, metrics and summary are untouched; the new run's checkpoint waits in run.partial/" ||
  fail "--overwrite interrupted (exit $rc) changed the previous result"
# A kill -9 in the middle of a run: the previous result is still whole.
"$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" -o "$W/run" --overwrite --epochs 50 >/dev/null 2>&1 &
pid=$!
for _ in $(seq 600); do [[ -s "$W/run/run.partial/metrics.jsonl" ]] && break; sleep 0.1; done
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
[[ $(digest "$W/run") == "$before" ]] && pass "SIGKILL during --overwrite: the previous result is intact" ||
  fail "SIGKILL during --overwrite damaged the previous result"
# Stale temporary files of killed writes are removed when a run takes the directory again.
touch "$W/run/.summary.json.tmp.Ab3xYz" "$W/run/run.partial/.checkpoint.safetensors.tmp.Qw9eRt"
"$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" -o "$W/run" --overwrite --epochs 1 >/dev/null 2>"$W/err" ||
  fail "--overwrite run: $(tail -3 "$W/err")"
[[ ! -e "$W/run/.summary.json.tmp.Ab3xYz" && ! -e "$W/run/run.partial" ]] &&
  pass "a finished --overwrite run leaves no temporary files and no run.partial/" || fail "leftovers: $(ls -a "$W/run")"
[[ $(digest "$W/run") != "$before" && -s "$W/run/adapter/adapter_model.safetensors" ]] && pass "--overwrite replaced the result once complete" ||
  fail "--overwrite did not replace the result"
# Two runs into one directory: the second is refused while the first holds it.
mkdir -p "$W/locked"
flock "$W/locked" -c "touch '$W/lock_held'; sleep 30" &
holder=$!
for _ in $(seq 100); do [[ -e "$W/lock_held" ]] && break; sleep 0.1; done
expect_error "a run into a directory another run holds" "is in use by another peft-train run" - \
  train "${common[@]}" --train "$W/sst_train.tsv" -o "$W/locked"
kill $holder 2>/dev/null; wait $holder 2>/dev/null
[[ -z $(ls -A "$W/locked") ]] || fail "the refused run wrote into the locked directory"
# merge: never over its own input, never over a directory that is not a model, replaced whole.
expect_error "merge -o onto its --model" "is the --model directory this command reads" - merge --model "$M" --adapter "$A" -o "$M"
expect_error "merge -o onto its --adapter" "is the --adapter directory" - merge --model "$M" --adapter "$A" -o "$A"
"$TRAIN" merge --model "$M" --adapter "$A" -o "$W/merged" >/dev/null 2>&1 || fail "merge"
merged_before=$(digest "$W/merged")
expect_error "merge onto a model without --overwrite" "is not empty; pass --overwrite" - merge --model "$M" --adapter "$A" -o "$W/merged"
"$TRAIN" merge --model "$M" --adapter "$W/ner/adapter" -o "$W/merged" --overwrite >/dev/null 2>"$W/err" || fail "merge --overwrite: $(cat "$W/err")"
grep -q TokenClassification "$W/merged/config.json" && [[ $(digest "$W/merged") != "$merged_before" ]] &&
  pass "merge --overwrite replaced the whole model" || fail "merge --overwrite left a mixture"
ls -a "$W" | grep -q "\.merged\.merge\." && fail "merge left its staging directory behind"
mkdir -p "$W/notamodel" && echo "keep me" >"$W/notamodel/notes.txt"
expect_error "merge --overwrite onto a directory with other files" "refusing to replace .*notamodel': it holds 'notes.txt'" - \
  merge --model "$M" --adapter "$A" -o "$W/notamodel" --overwrite
[[ $(cat "$W/notamodel/notes.txt") == "keep me" ]] || fail "merge touched a foreign file"

# ---- 5. data columns: consistent counts, named columns, file:line errors ------------------------------
printf 'good film\t1\nbad film\t0\ngood\tfilm\t1\n' >"$W/stray.tsv"
expect_error "a stray column" "stray.tsv:3: 3 column\(s\), but line 1 has 2" "$W/bad" train "${common[@]}" --train "$W/stray.tsv" -o "$W/bad"
printf 'text,label\ngood film,1\nbad, really bad film,0\n' >"$W/comma.csv"
expect_error "an unquoted comma in CSV" "comma.csv:3: 3 column\(s\), but line 1 has 2 \(a ',' inside a text must be within double quotes\)" "$W/bad" \
  train "${common[@]}" --train "$W/comma.csv" --header -o "$W/bad"
{ while IFS=$'\t' read -r text label; do printf '%s\t%s\t%s\n' "id$RANDOM" "$text" "$label"; done <"$W/sst_train.tsv"; } >"$W/three.tsv"
expect_error "three columns and no choice" "three.tsv:1: 3 columns: say which holds the text and which the label" "$W/bad" \
  train "${common[@]}" --train "$W/three.tsv" -o "$W/bad"
run train "${common[@]}" --train "$W/three.tsv" -o "$W/three" --text-column 2 --label-column 3 --epochs 1 &&
  pass "--text-column 2 --label-column 3 picks the columns" || fail "named columns by number: $(tail -2 "$W/err")"
{ printf 'id\tsentence\tlabel\n'; cat "$W/three.tsv"; } >"$W/header.tsv"
run train "${common[@]}" --train "$W/header.tsv" --header -o "$W/header" --epochs 1 &&
  grep -q "train: $(wc -l <"$W/sst_train.tsv") examples" "$W/err" &&
  pass "a header's 'sentence' and 'label' columns are found by name" || fail "header columns: $(tail -2 "$W/err")"
expect_error "a column name that is not in the header" "no label column named 'polarity' \(the header has 'id', 'sentence', 'label'\)" "$W/bad" \
  train "${common[@]}" --train "$W/header.tsv" --header --label-column polarity -o "$W/bad"
# CoNLL-2003's four columns: the word is the first, the NER tag the last.
awk 'NF { print $1 " NN B-NP " $2; next } { print }' "$W/ner_train.conll" >"$W/ner4.conll"
run train "${common[@]}" --train "$W/ner4.conll" -o "$W/ner4" --epochs 1 || fail "four-column CoNLL: $(tail -2 "$W/err")"
"$TRAIN" eval --model "$M" --adapter "$W/ner4/adapter" --data "$W/ner4.conll" --predictions "$W/ner4_pred.tsv" >/dev/null 2>&1 &&
  ! grep -q " NN B-NP" "$W/ner4_pred.tsv" && pass "four-column CoNLL: tokens are words, not 'word POS chunk'" ||
  fail "four-column CoNLL fed POS/chunk tags in as text"
printf 'alice\tB-person\nsmith\tI-person\n\nparis\tNN\tB-place\n' >"$W/mixed.conll"
expect_error "CoNLL lines with different columns" "mixed.conll:4: 3 fields, but line 1 has 2" "$W/bad" train "${common[@]}" --train "$W/mixed.conll" -o "$W/bad"

# ---- 6. sizes are checked before they size an allocation ----------------------------------------------
cfg() {  # cfg <key> <value>: a copy of the model whose config.json says key = value
  rm -rf "$W/cfg" && mkdir -p "$W/cfg" && cp "$M"/* "$W/cfg/"
  python3 -c "import json,sys; p=sys.argv[1]; c=json.load(open(p)); c[sys.argv[2]]=int(float(sys.argv[3])); json.dump(c, open(p,'w'))" \
    "$W/cfg/config.json" "$1" "$2"
}
cfg intermediate_size 1e12
expect_error "intermediate_size 1e12" "cfg/config.json: .*intermediate_size 1000000000000 exceeds the limit" "$W/bad" \
  train "${common[@]/$M/$W/cfg}" --train "$W/sst_train.tsv" -o "$W/bad"
cfg num_hidden_layers 1e9
expect_error "num_hidden_layers 1e9" "cfg/config.json: .*num_hidden_layers 1000000000 exceeds the limit" "$W/bad" \
  train "${common[@]/$M/$W/cfg}" --train "$W/sst_train.tsv" -o "$W/bad"
cfg intermediate_size 200000
/usr/bin/time -f %M -o "$W/rss" "$TRAIN" train "${common[@]/$M/$W/cfg}" --train "$W/sst_train.tsv" -o "$W/bad" >/dev/null 2>"$W/err"
grep -Eq "intermediate_size is 200000 but .*model.safetensors's '.*intermediate.dense.weight' has shape \[64, 32\]" "$W/err" &&
  (($(tail -1 "$W/rss") < $(rss_bound 200000))) && pass "intermediate_size 200000 against the checkpoint: refused before allocating ($(tail -1 "$W/rss") KB peak)" ||
  fail "intermediate_size 200000: $(cat "$W/err") (peak $(cat "$W/rss") KB)"
cfg num_hidden_layers 3
expect_error "num_hidden_layers of another model" "num_hidden_layers is 3 but .* has 2 encoder layers" "$W/bad" \
  eval --model "$W/cfg" --adapter "$A" --data "$W/sst_dev.tsv"

# ---- 7. data errors come early, name the line, and lose no output --------------------------------------
{ head -3 "$W/ner_train.conll"; printf 'alice\tPER\n\n'; cat "$W/ner_train.conll"; } >"$W/badtag.conll"
expect_error "a tag that is not BIO" "badtag.conll:4: tag 'PER' is not O, B-<type> or I-<type>" "$W/bad" \
  train "${common[@]}" --train "$W/badtag.conll" -o "$W/bad"
expect_error "truncation that leaves no tag" "no tag is left to train or score on" "$W/bad" \
  train "${common[@]}" --train "$W/ner_train.conll" -o "$W/bad" --max-length 2 --truncate
{ head -2 "$W/sst_dev.tsv" | cut -f1; printf '%s\n' "$(printf 'good %.0s' {1..80})"; echo "a fine film"; } >"$W/long.txt"
expect_error "predict: an over-long line" "long.txt:3: 82 tokens .* \(predict --truncate labels it" - predict --model "$M" --adapter "$A" --input "$W/long.txt"
run predict --model "$M" --adapter "$A" --input "$W/long.txt" --truncate && [[ $(wc -l <"$W/out") -eq 4 ]] &&
  pass "predict --truncate labels every line" || fail "predict --truncate: $(cat "$W/err")"
printf 'a good film\n\n   \na bad film\n' | "$TRAIN" predict --model "$M" --adapter "$A" >"$W/out" 2>"$W/err"
[[ $(wc -l <"$W/out") -eq 4 && -z $(sed -n 2p "$W/out") ]] && pass "predict: 4 lines in (2 blank), 4 lines out" ||
  fail "predict blank lines: $(cat -A "$W/out")"
printf 'a good\0 film\n' >"$W/nul.txt"
expect_error "predict: a NUL byte" "nul.txt:1: NUL byte at byte 7" - predict --model "$M" --adapter "$A" --input "$W/nul.txt"
printf 'good film\t1\nbad\0 film\t0\n' >"$W/nul.tsv"
expect_error "train: a NUL byte" "nul.tsv:2: NUL byte" "$W/bad" train "${common[@]}" --train "$W/nul.tsv" -o "$W/bad"
if [[ -w /dev/full ]]; then
  "$TRAIN" predict --model "$M" --adapter "$A" --input "$W/sst_dev.tsv" >/dev/full 2>"$W/err" && fail "predict onto a full disk exited 0" ||
    { grep -q "writing to standard output failed: No space left" "$W/err" && pass "predict onto a full disk fails: $(cat "$W/err")" || fail "full disk: $(cat "$W/err")"; }
  expect_error "eval --predictions onto a full disk" "/dev/full.*No space left" - eval --model "$M" --adapter "$A" --data "$W/sst_dev.tsv" --predictions /dev/full
fi
# ---- DoRA and LayerNorm-tuning adapters: damaged or inconsistent files are refused by name -----------
"$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" -o "$W/dora" --method lora --dora --epochs 1 >/dev/null 2>&1 ||
  fail "dora baseline"
drop() {  # drop <adapter dir> <tensor name part>: rewrites adapter_model.safetensors without those tensors
  python3 - "$1/adapter_model.safetensors" "$2" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
data, out, off = raw[8 + n:], {}, 0
chunks = []
for k, v in header.items():
    if k == "__metadata__" or sys.argv[2] in k:
        if k == "__metadata__": out[k] = v
        continue
    b, e = v["data_offsets"]
    chunks.append(data[b:e])
    out[k] = dict(v, data_offsets=[off, off + e - b])
    off += e - b
h = json.dumps(out).encode()
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + b"".join(chunks))
PY
}
cp -r "$W/dora/adapter" "$W/dora_nomag" && drop "$W/dora_nomag" lora_magnitude_vector
expect_error "DoRA adapter without its magnitudes" "lora_magnitude_vector' is not in adapter_model.safetensors" - \
  eval --model "$M" --adapter "$W/dora_nomag" --data "$W/sst_dev.tsv"
cp -r "$W/dora/adapter" "$W/dora_off" && rm "$W/dora_off/peft_train.json" &&
  sed -i 's/"use_dora": true/"use_dora": false/' "$W/dora_off/adapter_config.json"
expect_error "magnitudes in a file whose config says use_dora: false" "lora_magnitude_vector' matches no trainable parameter" - \
  eval --model "$M" --adapter "$W/dora_off" --data "$W/sst_dev.tsv"
sed -i 's/"use_dora": false/"use_dora": "yes"/' "$W/dora_off/adapter_config.json"
expect_error "use_dora that is not a boolean" "adapter_config.json.*use_dora" - eval --model "$M" --adapter "$W/dora_off" --data "$W/sst_dev.tsv"
cp -r "$W/dora/adapter" "$W/dora_nan" && poison "$W/dora/adapter/adapter_model.safetensors" "$W/dora_nan/adapter_model.safetensors" lora_magnitude
expect_error "merge of a DoRA adapter with a NaN magnitude" "tensor '.*lora_magnitude_vector' holds 1 NaN or infinite" "$W/merged_dora_nan" \
  merge --model "$M" --adapter "$W/dora_nan" -o "$W/merged_dora_nan"
"$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" -o "$W/ln" --method ln_tuning --epochs 1 >/dev/null 2>&1 || fail "ln_tuning baseline"
cp -r "$W/ln/adapter" "$W/ln_ex" && rm "$W/ln_ex/peft_train.json" &&
  sed -i 's/"exclude_modules": null/"exclude_modules": ["embeddings.LayerNorm"]/' "$W/ln_ex/adapter_config.json"
expect_error "LN_TUNING with exclude_modules" "'exclude_modules' is not supported" - eval --model "$M" --adapter "$W/ln_ex" --data "$W/sst_dev.tsv"
cp -r "$W/ln/adapter" "$W/ln_short" && drop "$W/ln_short" "encoder.layer.1.output.LayerNorm"
expect_error "LN_TUNING adapter missing a norm" "output.LayerNorm.ln_tuning_layers.weight' is not in adapter_model.safetensors" - \
  eval --model "$M" --adapter "$W/ln_short" --data "$W/sst_dev.tsv"

# ---- AdaLoRA adapters: a rank pattern that does not fit --------------------------------------------------
"$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" -o "$W/ada" --method adalora --adalora-init-r 4 --adalora-target-r 2 \
  --adalora-tfinal 2 --epochs 1 >/dev/null 2>&1 || fail "adalora baseline"
cp -r "$W/ada/adapter" "$W/ada_rp" && rm "$W/ada_rp/peft_train.json" &&
  python3 - "$W/ada_rp/adapter_config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
k = next(iter(c["rank_pattern"]))
c["rank_pattern"][k] = c["rank_pattern"][k][:3]
json.dump(c, open(sys.argv[1], "w"))
PY
expect_error "ADALORA rank_pattern shorter than init_r" "'rank_pattern': entry '.*lora_E' must be '<module>.lora_E' with a list of 4 booleans" - \
  eval --model "$M" --adapter "$W/ada_rp" --data "$W/sst_dev.tsv"
cp -r "$W/ada/adapter" "$W/ada_flip" && rm "$W/ada_flip/peft_train.json" &&
  python3 - "$W/ada_flip/adapter_config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
k = next(iter(c["rank_pattern"]))
c["rank_pattern"][k] = [not v for v in c["rank_pattern"][k]] if sum(c["rank_pattern"][k]) != 2 else [True] * 4
json.dump(c, open(sys.argv[1], "w"))
PY
expect_error "ADALORA rank_pattern that disagrees with its tensors" "lora_[AEB].*has shape .* but the model's" - \
  eval --model "$M" --adapter "$W/ada_flip" --data "$W/sst_dev.tsv"
expect_error "lora and adalora together" "lora and adalora would both put lora_A" "$W/bad" \
  train "${common[@]}" --train "$W/sst_train.tsv" -o "$W/bad" --method lora+adalora

# ---- VeRA adapters: the shared matrices missing, of another rank, or poisoned --------------------------
"$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" -o "$W/vera" --method vera --vera-rank 8 --epochs 1 >/dev/null 2>&1 ||
  fail "vera baseline"
cp -r "$W/vera/adapter" "$W/vera_noa" && drop "$W/vera_noa" base_model.vera_A
expect_error "VeRA adapter without its shared matrix A" "has no tensor 'base_model.vera_A'" - \
  eval --model "$M" --adapter "$W/vera_noa" --data "$W/sst_dev.tsv"
cp -r "$W/vera/adapter" "$W/vera_r" && rm "$W/vera_r/peft_train.json" && sed -i 's/"r": 8/"r": 4/' "$W/vera_r/adapter_config.json"
expect_error "VeRA adapter whose config's r differs from its tensors" "vera_lambda_d' has shape .8. but the model's" - \
  eval --model "$M" --adapter "$W/vera_r" --data "$W/sst_dev.tsv"
cp -r "$W/vera/adapter" "$W/vera_sp" && rm "$W/vera_sp/peft_train.json" &&
  sed -i 's/"save_projection": true/"save_projection": false/' "$W/vera_sp/adapter_config.json"
expect_error "VeRA adapter saved without its matrices" "'save_projection': false" - eval --model "$M" --adapter "$W/vera_sp" --data "$W/sst_dev.tsv"
cp -r "$W/vera/adapter" "$W/vera_nan" && poison "$W/vera/adapter/adapter_model.safetensors" "$W/vera_nan/adapter_model.safetensors" vera_B
expect_error "merge of a VeRA adapter with a NaN in its shared matrix" "tensor 'base_model.vera_B' holds 1 NaN or infinite" "$W/merged_vera_nan" \
  merge --model "$M" --adapter "$W/vera_nan" -o "$W/merged_vera_nan"

python3 -c "import sys; sys.stdout.write('a' * 50_000_000 + '\t1\n')" >"$W/huge.tsv"
/usr/bin/time -f %M -o "$W/rss" "$TRAIN" train "${common[@]}" --train "$W/huge.tsv" -o "$W/bad" >/dev/null 2>"$W/err"
grep -q "huge.tsv:1: line longer than the limit of 1048576 bytes" "$W/err" && (($(tail -1 "$W/rss") < $(rss_bound 150000))) &&
  pass "a 50 MB line is refused before it is read whole ($(tail -1 "$W/rss") KB peak)" || fail "huge line: $(cat "$W/err") ($(cat "$W/rss") KB)"
[[ ! -e "$W/bad" ]] || fail "a refused run left $W/bad"

if ((failures)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all hostile-use checks passed"
