#!/usr/bin/env bash
# End-to-end tests of peft-train on a tiny model made here (make_tiny_model): training with several
# methods on both tasks, eval / predict / merge agreeing with each other, resume after an
# interruption reaching the same weights and metrics, and bad input failing cleanly.
#
#   test_trainer.sh <peft-train> <make_tiny_model> <work dir>
source "$(dirname "$0")/setup.sh"
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {'d': d}))" "$@"; }
common=(--model "$M" --threads 2 --batch-size 8 --log-every 5 --seed 7)

# ---- 1. LoRA on sentences: files, metrics, plot ---------------------------------------------------
if "$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" --dev "$W/sst_dev.tsv" -o "$W/lora" --method lora \
    --rank 4 --alpha 8 --target query,value --epochs 3 --lr 5e-3 >"$W/lora.out" 2>"$W/lora.err"; then
  pass "train lora"
else
  fail "train lora: $(tail -3 "$W/lora.err")"
fi
for f in adapter/adapter_config.json adapter/adapter_model.safetensors adapter/peft_train.json metrics.jsonl summary.json; do
  [[ -s "$W/lora/$f" ]] || fail "lora run lacks $f"
done
[[ ! -e "$W/lora/run.partial" ]] || fail "the run.partial/ of a finished run (its checkpoint) was left behind"
grep -q "trainable params" "$W/lora.out" && grep -q "dev accuracy" "$W/lora.out" || fail "no summary table printed"
python3 - "$W/lora/metrics.jsonl" <<'PY' || fail "metrics.jsonl"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
evals = [r for r in rows if r["event"] == "eval"]
train = [r for r in rows if r["event"] == "train"]
assert len(evals) == 3, evals
assert all(0 <= r["accuracy"] <= 1 for r in evals)
assert len(train) >= 3 and all(r["loss"] > 0 for r in train)
PY
python3 -c "import json,sys; c=json.load(open(sys.argv[1])); assert c['peft_type']=='LORA' and c['r']==4 and c['lora_alpha']==8 and sorted(c['target_modules'])==['query','value'] and c['modules_to_save']==['classifier'], c" \
  "$W/lora/adapter/adapter_config.json" || fail "adapter_config.json is not what PEFT writes"
if command -v gnuplot >/dev/null; then grep -q "<svg" "$W/lora/training.svg" || fail "no training.svg"; fi
pass "lora outputs"

# ---- 2. eval / predict agree with training's last evaluation --------------------------------------
"$TRAIN" eval --model "$M" --adapter "$W/lora/adapter" --data "$W/sst_dev.tsv" --predictions "$W/lora_pred.tsv" >"$W/eval.json" 2>"$W/eval.err" ||
  fail "eval: $(cat "$W/eval.err")"
python3 - "$W/eval.json" "$W/lora/summary.json" <<'PY' || fail "eval differs from training's dev evaluation"
import json, sys
e = json.load(open(sys.argv[1])); s = json.load(open(sys.argv[2]))
assert abs(e["accuracy"] - s["dev"]["accuracy"]) < 1e-12 and abs(e["loss"] - s["dev"]["loss"]) < 1e-5, (e, s["dev"])
PY
# Predictions onto a pipe (a FIFO, as `--predictions /dev/stdout | ...` gives): written through, not replaced.
mkfifo "$W/pred.fifo"
cat "$W/pred.fifo" >"$W/pred_from_fifo.tsv" &
"$TRAIN" eval --model "$M" --adapter "$W/lora/adapter" --data "$W/sst_dev.tsv" --predictions "$W/pred.fifo" >/dev/null 2>"$W/eval.err" ||
  fail "eval onto a FIFO: $(cat "$W/eval.err")"
wait
[[ -p "$W/pred.fifo" ]] || fail "the FIFO was replaced by a regular file"
cmp -s "$W/pred_from_fifo.tsv" "$W/lora_pred.tsv" || fail "predictions through the FIFO differ from the file's"
pass "predictions onto a FIFO arrive through it, and it stays a FIFO"
head -5 "$W/sst_dev.tsv" | cut -f1 | "$TRAIN" predict --model "$M" --adapter "$W/lora/adapter" >"$W/predict.out" 2>"$W/predict.err" ||
  fail "predict: $(cat "$W/predict.err")"
[[ $(wc -l <"$W/predict.out") -eq 5 ]] || fail "predict printed $(wc -l <"$W/predict.out") lines for 5 inputs"
# The same texts, labelled by eval: predict must agree line by line.
diff <(cut -f1 "$W/predict.out") <(head -5 "$W/lora_pred.tsv" | cut -f1) >/dev/null || fail "predict and eval disagree"
pass "eval and predict"
# Without peft_train.json (as Python PEFT writes it) the task, LoRA settings and labels come from the files.
rm -rf "$W/lora_peft" && cp -r "$W/lora/adapter" "$W/lora_peft" && rm "$W/lora_peft/peft_train.json"
"$TRAIN" eval --model "$M" --adapter "$W/lora_peft" --data "$W/sst_dev.tsv" >"$W/eval_peft.json" 2>"$W/eval_peft.err" ||
  fail "eval of a PEFT adapter without run card: $(cat "$W/eval_peft.err")"
grep -q "no peft_train.json; from its PEFT files: task sequence, lora (r=4, alpha=8" "$W/eval_peft.err" || fail "no note on the derived card"
cmp -s <(json "$W/eval.json" "d['accuracy'], d['loss']") <(json "$W/eval_peft.json" "d['accuracy'], d['loss']") ||
  fail "the adapter scores differently without its run card"
pass "eval of an adapter without run card"

# ---- 3. merge: the merged model scores exactly as base + adapter ----------------------------------
"$TRAIN" merge --model "$M" --adapter "$W/lora/adapter" -o "$W/merged" >"$W/merge.out" 2>"$W/merge.err" || fail "merge: $(cat "$W/merge.err")"
"$TRAIN" eval --model "$W/merged" --data "$W/sst_dev.tsv" --predictions "$W/merged_pred.tsv" >"$W/eval_merged.json" 2>&1 ||
  fail "eval merged: $(cat "$W/eval_merged.json")"
python3 - "$W/eval.json" "$W/eval_merged.json" <<'PY' || fail "merged model scores differently"
import json, sys
a = json.load(open(sys.argv[1])); b = json.load(open(sys.argv[2]))
assert a["accuracy"] == b["accuracy"] and abs(a["loss"] - b["loss"]) < 1e-4, (a, b)
PY
cmp -s <(cut -f1,3,4 "$W/lora_pred.tsv") <(cut -f1,3,4 "$W/merged_pred.tsv") || fail "merged predictions differ"
pass "merge"

# ---- 4. full fine-tuning learns the task; the written model evaluates alone ------------------------
"$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" --dev "$W/sst_dev.tsv" -o "$W/full" --method full --epochs 4 \
  --lr 2e-3 --no-plot >"$W/full.out" 2>"$W/full.err" || fail "train full: $(tail -3 "$W/full.err")"
acc=$(json "$W/full/summary.json" "d['dev']['accuracy']")
python3 -c "import sys; assert float(sys.argv[1]) >= 0.9" "$acc" && pass "full fine-tuning: dev accuracy $acc" ||
  fail "full fine-tuning reached only $acc on a task a tiny model can learn"
"$TRAIN" eval --model "$W/full/model" --data "$W/sst_dev.tsv" >"$W/eval_full.json" 2>&1 || fail "eval full model: $(cat "$W/eval_full.json")"
[[ $(json "$W/eval_full.json" "d['accuracy']") == "$acc" ]] || fail "the saved full model scores differently"

# ---- 5. token tagging with LoRA + BitFit: entity F1 -------------------------------------------------
"$TRAIN" train "${common[@]}" --train "$W/ner_train.conll" --dev "$W/ner_dev.conll" -o "$W/ner" --method lora+bitfit \
  --target all --epochs 8 --lr 1e-2 --no-plot >"$W/ner.out" 2>"$W/ner.err" || fail "train tagging: $(tail -3 "$W/ner.err")"
f1=$(json "$W/ner/summary.json" "d['dev']['f1']")
python3 -c "import sys; assert float(sys.argv[1]) >= 0.8" "$f1" && pass "tagging: dev entity F1 $f1" || fail "tagging F1 $f1"
echo "alice smith went to paris" | "$TRAIN" predict --model "$M" --adapter "$W/ner/adapter" >"$W/ner_predict.out" 2>"$W/ner_predict.err" ||
  fail "predict tags: $(cat "$W/ner_predict.err")"
[[ $(grep -c . "$W/ner_predict.out") -eq 5 ]] || fail "predict tagged $(grep -c . "$W/ner_predict.out") words of 5"
grep -q "PEFT_CPP" "$W/ner/adapter/adapter_config.json" || fail "a BitFit adapter must say peft_type PEFT_CPP"

# ---- 6. interruption and --resume reach the same weights and metrics -------------------------------
resume_args=(train "${common[@]}" --train "$W/sst_train.tsv" --dev "$W/sst_dev.tsv" --method lora+bitfit --epochs 2 --lr 5e-3
  --save-every 0 --no-plot)
"$TRAIN" "${resume_args[@]}" -o "$W/straight" >/dev/null 2>"$W/straight.err" || fail "uninterrupted run: $(tail -3 "$W/straight.err")"
"$TRAIN" "${resume_args[@]}" -o "$W/resumed" --interrupt-after 37 >/dev/null 2>"$W/interrupted.err"
rc=$?
[[ $rc -eq 130 ]] || fail "an interrupted run must exit 130, got $rc"
grep -q "resume" "$W/interrupted.err" || fail "the interruption message does not say how to resume"
[[ -s "$W/resumed/run.partial/checkpoint.safetensors" && ! -e "$W/resumed/adapter" ]] || fail "interrupted run: checkpoint missing or adapter written"
"$TRAIN" "${resume_args[@]}" -o "$W/resumed" >/dev/null 2>"$W/norestart.err" && fail "a second run over a checkpoint without --resume must refuse"
"$TRAIN" "${resume_args[@]}" -o "$W/resumed" --warmup 0.2 --resume >/dev/null 2>"$W/changed.err" && fail "--resume with other options must refuse"
grep -q "other options" "$W/changed.err" || fail "changed-options message: $(cat "$W/changed.err")"
"$TRAIN" "${resume_args[@]}" -o "$W/resumed" --resume >/dev/null 2>"$W/resumed.err" || fail "resume: $(tail -3 "$W/resumed.err")"
cmp -s "$W/straight/adapter/adapter_model.safetensors" "$W/resumed/adapter/adapter_model.safetensors" &&
  pass "resumed weights are bitwise those of the uninterrupted run" || fail "resumed weights differ"
python3 - "$W/straight/metrics.jsonl" "$W/resumed/metrics.jsonl" <<'PY' || fail "resumed metrics differ"
import json, sys
def load(p):
    rows = [json.loads(l) for l in open(p)]
    for r in rows: r.pop("elapsed_s", None), r.pop("rss_mb", None)
    return rows
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a == b, (len(a), len(b))
PY

# ---- 6b. the library trainer's options through the tool -------------------------------------------
# A learning rate that blows the weights up: an error naming the step, and no adapter written.
"$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" -o "$W/nan" --method lora --lr 1e300 --max-steps 2 --no-plot \
  >/dev/null 2>"$W/nan.err" && fail "a run whose weights became non-finite exited 0"
grep -Eq "training stopped at step 2: .*not finite" "$W/nan.err" && pass "non-finite loss stops: $(grep -m1 "training stopped" "$W/nan.err")" ||
  fail "non-finite message: $(cat "$W/nan.err")"
[[ ! -e "$W/nan/adapter" ]] || fail "a non-finite run wrote an adapter"
# ... and after its only step, when no later loss would show it: the weights are checked too.
"$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" -o "$W/nan1" --method lora --lr 1e300 --max-steps 1 --no-plot \
  >/dev/null 2>"$W/nan1.err" && fail "a one-step run with non-finite weights exited 0"
grep -q "training stopped at step 1: parameter '.*' is not finite after the last step" "$W/nan1.err" &&
  pass "non-finite weights stop: $(grep -m1 "training stopped" "$W/nan1.err")" || fail "non-finite weights message: $(cat "$W/nan1.err")"
[[ ! -e "$W/nan1/adapter" ]] || fail "a one-step non-finite run wrote an adapter"
# Gradient accumulation: 4 batches per step make a quarter of the steps.
"$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" -o "$W/accum" --method lora --epochs 1 --gradient-accumulation 4 \
  --no-plot >/dev/null 2>"$W/accum.err" || fail "accumulation run: $(tail -3 "$W/accum.err")"
single=$(json "$W/lora/summary.json" "d['steps'] // d['epochs']")
accum=$(json "$W/accum/summary.json" "d['steps']")
[[ $accum -eq $(((single + 3) / 4)) ]] && pass "gradient accumulation: $accum steps for $single batches" ||
  fail "gradient accumulation made $accum steps for $single batches"
# Early stopping with patience 1 over 30 epochs stops long before the end; TensorBoard gets scalars.
"$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" --dev "$W/sst_dev.tsv" -o "$W/early" --method bitfit --epochs 30 \
  --lr 5e-3 --early-stopping 1 --tensorboard "$W/early/tb" --no-plot >/dev/null 2>"$W/early.err" ||
  fail "early-stopping run: $(tail -3 "$W/early.err")"
grep -q "early stopping" "$W/early.err" && [[ $(grep -c '"event": *"eval"' "$W/early/metrics.jsonl") -lt 30 ]] &&
  pass "early stopping after $(grep -c '"event": *"eval"' "$W/early/metrics.jsonl") evaluations" || fail "early stopping did not stop"
ls "$W/early/tb"/events.out.tfevents.* >/dev/null 2>&1 && pass "TensorBoard event file written" || fail "no TensorBoard event file"
# Pfeiffer adapters in the run-time plan: after the FFN output only.
"$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" -o "$W/pfeiffer" --method pfeiffer --epochs 1 --no-plot >/dev/null 2>&1 ||
  fail "pfeiffer run failed"
python3 - "$W/pfeiffer/adapter/adapter_model.safetensors" <<'PY' && pass "pfeiffer places adapters after the FFN output only" || fail "pfeiffer placement"
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
names = [k for k in json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]]) if k != "__metadata__"]
adapters = [n for n in names if ".adapter." in n]
assert adapters and all(".attention." not in n for n in adapters), adapters
assert not any("lora_" in n or "bias_delta" in n for n in names), names
PY
# (IA)3, alone (PEFT's IA3 format, read back without its run card) and over LoRA + BitFit (merged whole).
"$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" --dev "$W/sst_dev.tsv" -o "$W/ia3" --method ia3 --epochs 2 --lr 5e-2 \
  --no-plot >/dev/null 2>"$W/ia3.err" || fail "ia3 run failed: $(tail -3 "$W/ia3.err")"
python3 - "$W/ia3/adapter" <<'PY' && pass "ia3 writes PEFT's IA3 adapter" || fail "ia3 adapter files"
import json, struct, sys
c = json.load(open(sys.argv[1] + "/adapter_config.json"))
assert c["peft_type"] == "IA3" and set(c["feedforward_modules"]) <= set(c["target_modules"]), c
raw = open(sys.argv[1] + "/adapter_model.safetensors", "rb").read()
head = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
shapes = {k: v["shape"] for k, v in head.items() if k.endswith(".ia3_l")}
assert len(shapes) == 6, shapes  # key, value, FFN output in 2 layers
assert all(v[1] == 1 for k, v in shapes.items() if ".attention.self." in k), shapes
assert all(v[0] == 1 for k, v in shapes.items() if ".attention." not in k), shapes
PY
rm -rf "$W/ia3_peft" && cp -r "$W/ia3/adapter" "$W/ia3_peft" && rm "$W/ia3_peft/peft_train.json"
"$TRAIN" eval --model "$M" --adapter "$W/ia3/adapter" --data "$W/sst_dev.tsv" >"$W/ia3_eval.json" 2>/dev/null &&
  "$TRAIN" eval --model "$M" --adapter "$W/ia3_peft" --data "$W/sst_dev.tsv" >"$W/ia3_peft_eval.json" 2>/dev/null &&
  cmp -s <(json "$W/ia3_eval.json" "d['accuracy'], d['loss']") <(json "$W/ia3_peft_eval.json" "d['accuracy'], d['loss']") &&
  pass "an IA3 adapter scores the same without its run card" || fail "IA3 adapter without run card"
"$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" -o "$W/lbi" --method ia3+bitfit+lora --rank 2 --epochs 1 --lr 2e-2 \
  --no-plot >/dev/null 2>"$W/lbi.err" || fail "lora+bitfit+ia3 run failed: $(tail -3 "$W/lbi.err")"
"$TRAIN" eval --model "$M" --adapter "$W/lbi/adapter" --data "$W/sst_dev.tsv" >"$W/lbi_eval.json" 2>/dev/null &&
  "$TRAIN" merge --model "$M" --adapter "$W/lbi/adapter" -o "$W/lbi_merged" >/dev/null 2>&1 &&
  "$TRAIN" eval --model "$W/lbi_merged" --data "$W/sst_dev.tsv" >"$W/lbi_merged_eval.json" 2>/dev/null &&
  python3 - "$W/lbi_eval.json" "$W/lbi_merged_eval.json" "$W/lbi/adapter/peft_train.json" <<'PY' && pass "lora+bitfit+ia3 merges into one model that scores the same" || fail "lora+bitfit+ia3 merge"
import json, sys
a, b, card = (json.load(open(p)) for p in sys.argv[1:])
assert card["method"] == "lora+bitfit+ia3", card["method"]
assert a["accuracy"] == b["accuracy"] and abs(a["loss"] - b["loss"]) < 1e-4, (a, b)
PY
# DoRA (LoRA with magnitudes, PEFT's use_dora), AdaLoRA, VeRA (PEFT's VERA) and LayerNorm tuning (PEFT's LN_TUNING): each writes
# PEFT's files, scores the same read back without its run card, and merges into a model that scores
# the same.
"$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" --dev "$W/sst_dev.tsv" -o "$W/dora" --method lora --dora --rank 2 \
  --target query,value --epochs 2 --lr 2e-2 --no-plot >/dev/null 2>"$W/dora.err" || fail "dora run failed: $(tail -3 "$W/dora.err")"
"$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" --dev "$W/sst_dev.tsv" -o "$W/ln" --method ln_tuning \
  --epochs 2 --lr 2e-2 --no-plot >/dev/null 2>"$W/ln.err" || fail "ln_tuning run failed: $(tail -3 "$W/ln.err")"
"$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" --dev "$W/sst_dev.tsv" -o "$W/vera" --method vera --vera-rank 12 \
  --vera-target query,value,ffn_in --epochs 2 --lr 2e-2 --no-plot >/dev/null 2>"$W/vera.err" || fail "vera run failed: $(tail -3 "$W/vera.err")"
"$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" --dev "$W/sst_dev.tsv" -o "$W/ada" --method adalora --adalora-init-r 4 \
  --adalora-target-r 2 --adalora-tfinal 2 --epochs 2 --lr 2e-2 --no-plot >/dev/null 2>"$W/ada.err" ||
  fail "adalora run failed: $(tail -3 "$W/ada.err")"
for run in dora ln vera ada; do
  rm -rf "$W/${run}_peft" && cp -r "$W/$run/adapter" "$W/${run}_peft" && rm "$W/${run}_peft/peft_train.json"
  "$TRAIN" eval --model "$M" --adapter "$W/$run/adapter" --data "$W/sst_dev.tsv" >"$W/${run}_eval.json" 2>/dev/null &&
    "$TRAIN" eval --model "$M" --adapter "$W/${run}_peft" --data "$W/sst_dev.tsv" >"$W/${run}_peft_eval.json" 2>/dev/null &&
    "$TRAIN" merge --model "$M" --adapter "$W/$run/adapter" -o "$W/${run}_merged" >/dev/null 2>&1 &&
    "$TRAIN" eval --model "$W/${run}_merged" --data "$W/sst_dev.tsv" >"$W/${run}_merged_eval.json" 2>/dev/null &&
    python3 - "$W/$run/adapter" "$W/${run}_eval.json" "$W/${run}_peft_eval.json" "$W/${run}_merged_eval.json" <<'PY' &&
import json, struct, sys
adapter, a, b, m = sys.argv[1], *(json.load(open(p)) for p in sys.argv[2:])
c = json.load(open(adapter + "/adapter_config.json"))
raw = open(adapter + "/adapter_model.safetensors", "rb").read()
head = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
if c["peft_type"] == "LORA":
    assert c["use_dora"] is True, c
    mags = {k: v["shape"] for k, v in head.items() if k.endswith(".lora_magnitude_vector")}
    assert len(mags) == 4 and all(len(s) == 1 for s in mags.values()), mags  # query and value in 2 layers
elif c["peft_type"] == "ADALORA":
    p = c["rank_pattern"]  # query and value of two layers, 4 flags each; the final mask keeps 2 per module on average
    assert len(p) == 4 and all(len(v) == 4 for v in p.values()) and sum(sum(v) for v in p.values()) == 8, p
    for k, v in p.items():
        mod = "base_model.model." + k[: -len(".lora_E")]
        assert head[mod + ".lora_A"]["shape"] == [sum(v), 32] and head[mod + ".lora_B"]["shape"] == [32, sum(v)], (k, head.keys())
    assert c["total_step"] > 0 and not any("adalora_state" in k for k in head), c
elif c["peft_type"] == "VERA":
    assert c["r"] == 12 and c["save_projection"] is True and c["target_modules"] == ["intermediate.dense", "query", "value"], c
    assert head["base_model.vera_A"]["shape"] == [12, 32] and head["base_model.vera_B"]["shape"] == [64, 12], head.keys()
    assert len([k for k in head if k.endswith(".vera_lambda_b") or k.endswith(".vera_lambda_d")]) == 12, head.keys()
else:
    assert c["peft_type"] == "LN_TUNING" and c["target_modules"] == ["LayerNorm"], c
    assert len([k for k in head if ".ln_tuning_layers." in k]) == 10, head.keys()  # 5 norms x (weight, bias)
assert (a["accuracy"], a["loss"]) == (b["accuracy"], b["loss"]), (a, b)
assert a["accuracy"] == m["accuracy"] and abs(a["loss"] - m["loss"]) < 1e-4, (a, m)
PY
    pass "$run: PEFT's files, the same scores without the run card and merged" || fail "$run adapter files, eval or merge"
done
# Prompt tuning (from a text) and prefix tuning (through its MLP): PEFT's files (the table as
# prompt_embeddings, the head under base_model.), the same scores without the run card, no merge.
"$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" --dev "$W/sst_dev.tsv" -o "$W/prompt" --method prompt --virtual-tokens 4 \
  --prompt-init text --prompt-init-text "a good film" --epochs 2 --lr 3e-2 --no-plot >/dev/null 2>"$W/prompt.err" ||
  fail "prompt run failed: $(tail -3 "$W/prompt.err")"
"$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" --dev "$W/sst_dev.tsv" -o "$W/prefix" --method prefix --virtual-tokens 3 \
  --prefix-projection --prefix-hidden 8 --epochs 2 --lr 1e-2 --no-plot >/dev/null 2>"$W/prefix.err" ||
  fail "prefix run failed: $(tail -3 "$W/prefix.err")"
for run in prompt prefix; do
  rm -rf "$W/${run}_peft" && cp -r "$W/$run/adapter" "$W/${run}_peft" && rm "$W/${run}_peft/peft_train.json"
  "$TRAIN" eval --model "$M" --adapter "$W/$run/adapter" --data "$W/sst_dev.tsv" >"$W/${run}_eval.json" 2>/dev/null &&
    "$TRAIN" eval --model "$M" --adapter "$W/${run}_peft" --data "$W/sst_dev.tsv" >"$W/${run}_peft_eval.json" 2>/dev/null &&
    ! "$TRAIN" merge --model "$M" --adapter "$W/$run/adapter" -o "$W/${run}_merged" >/dev/null 2>"$W/${run}_merge.err" &&
    grep -q "cannot be merged into the base weights" "$W/${run}_merge.err" && [[ ! -e "$W/${run}_merged" ]] &&
    python3 - "$W/$run/adapter" "$W/${run}_eval.json" "$W/${run}_peft_eval.json" <<'PY' &&
import json, struct, sys
adapter, a, b = sys.argv[1], *(json.load(open(p)) for p in sys.argv[2:])
c = json.load(open(adapter + "/adapter_config.json"))
raw = open(adapter + "/adapter_model.safetensors", "rb").read()
head = {k: v for k, v in json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]]).items() if k != "__metadata__"}
assert set(head) == {"prompt_embeddings", "base_model.classifier.weight", "base_model.classifier.bias"}, head.keys()
if c["peft_type"] == "PROMPT_TUNING":  # 4 virtual tokens of the hidden width, from a text
    assert head["prompt_embeddings"]["shape"] == [4, 32] and c["prompt_tuning_init"] == "TEXT", (head, c)
    assert c["prompt_tuning_init_text"] == "a good film" and c["tokenizer_name_or_path"], c
else:  # the prefix the MLP computes: 3 tokens x 2 layers x (K, V) x 32
    assert c["peft_type"] == "PREFIX_TUNING" and c["prefix_projection"] is True and c["encoder_hidden_size"] == 8, c
    assert head["prompt_embeddings"]["shape"] == [3, 2 * 2 * 32], head
assert (a["accuracy"], a["loss"]) == (b["accuracy"], b["loss"]), (a, b)
PY
    pass "$run: PEFT's files, the same scores without the run card, merge refused" || fail "$run adapter files, eval or merge"
done
expect_dora_alone() {
  "$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" -o "$W/bad" --method bitfit --dora >/dev/null 2>"$W/bad.err" &&
    return 1
  grep -q -- "--dora is a form of LoRA" "$W/bad.err" && [[ ! -e "$W/bad" ]]
}
expect_dora_alone && pass "--dora without LoRA is refused, nothing written" || fail "--dora without LoRA"

# ---- 7. bad input: a clear message naming the file and line, non-zero exit, nothing written --------
expect_error() {  # expect_error <name> <regex> <args...>
  local name=$1 pattern=$2
  shift 2
  rm -rf "$W/bad"
  if "$TRAIN" "$@" >"$W/bad.out" 2>"$W/bad.err"; then
    fail "$name: exited 0"
  elif ! grep -Eq -- "$pattern" "$W/bad.err"; then
    fail "$name: message '$(cat "$W/bad.err")' does not match '$pattern'"
  elif [[ -e "$W/bad" ]]; then
    fail "$name: left $W/bad behind"
  else
    pass "$name: $(head -1 "$W/bad.err")"
  fi
}
bad_train=(train --model "$M" --train "$W/sst_train.tsv" -o "$W/bad" --epochs 1)
expect_error "missing model directory" "'$W/nope' does not exist" train --model "$W/nope" --train "$W/sst_train.tsv" -o "$W/bad"
expect_error "absurd thread count" "--threads 100000 is more than 4 x the [0-9]+ CPUs" "${bad_train[@]}" --threads 100000
expect_error "negative thread count" "--threads must be 0" eval --model "$M" --data "$W/sst_dev.tsv" --threads -3
mkdir -p "$W/badmodel" && cp "$M"/* "$W/badmodel/"
echo '{"hidden_size": 32, "num_attention_heads": ' >"$W/badmodel/config.json"
expect_error "malformed config.json" "badmodel/config.json: not valid JSON" train --model "$W/badmodel" --train "$W/sst_train.tsv" -o "$W/bad"
cp "$M"/* "$W/badmodel/" && rm "$W/badmodel/model.safetensors"
expect_error "missing weights" "has no model.safetensors" train --model "$W/badmodel" --train "$W/sst_train.tsv" -o "$W/bad"
cp "$M"/* "$W/badmodel/" && echo "extra" >>"$W/badmodel/vocab.txt"
expect_error "vocabulary of another model" "vocab.txt has [0-9]+ tokens but the model's embedding table has [0-9]+ rows" \
  train --model "$W/badmodel" --train "$W/sst_train.tsv" -o "$W/bad"
head -c 100 "$M/model.safetensors" >"$W/badmodel/model.safetensors" && cp "$M/vocab.txt" "$W/badmodel/"
expect_error "truncated weights file" "badmodel/model.safetensors" train --model "$W/badmodel" --train "$W/sst_train.tsv" -o "$W/bad"
{ head -3 "$W/sst_dev.tsv"; printf 'a fine film\t2\n'; } >"$W/dev_badlabel.tsv"
python3 - "$M/model.safetensors" "$W/badmodel/model.safetensors" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
data = raw[8 + n:]
out, parts, offset = {}, [], 0
for k, v in sorted(header.items()):
    if k == "__metadata__" or "pooler" in k: continue
    b, e = v["data_offsets"]
    out[k] = dict(v, data_offsets=[offset, offset + e - b]); parts.append(data[b:e]); offset += e - b
h = json.dumps(out).encode(); h += b" " * (-len(h) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(h)) + h + b"".join(parts))
PY
expect_error "frozen pooler missing from the checkpoint" "has no pooler .* use --pooling mean" \
  train --model "$W/badmodel" --train "$W/sst_train.tsv" -o "$W/bad" --method lora
expect_error "dev label unknown to training" "dev_badlabel.tsv:4: label '2' is not one of \{0, 1\}" "${bad_train[@]}" --dev "$W/dev_badlabel.tsv"
{ head -3 "$W/sst_train.tsv"; echo; head -5 "$W/sst_train.tsv"; } >"$W/train_empty.tsv"
expect_error "empty line" "train_empty.tsv:4: empty line" train --model "$M" --train "$W/train_empty.tsv" -o "$W/bad"
{ head -3 "$W/sst_train.tsv"; echo "no label column here"; } >"$W/train_nolabel.tsv"
expect_error "missing label column" "train_nolabel.tsv:4: 1 column" train --model "$M" --train "$W/train_nolabel.tsv" -o "$W/bad"
{ head -2 "$W/sst_train.tsv"; printf '%s\t1\n' "$(printf 'good %.0s' {1..60})"; } >"$W/train_long.tsv"
expect_error "sequence longer than the model's positions" "train_long.tsv:3: 62 tokens .* exceed the maximum length 40" \
  train --model "$M" --train "$W/train_long.tsv" -o "$W/bad"
expect_error "--max-length beyond the positions" "--max-length 100 exceeds the model's 40 positions" "${bad_train[@]}" --max-length 100
printf 'alice\tB-person\nparis\n' >"$W/bad.conll"
expect_error "CoNLL line without a tag" "bad.conll:2: expected 'token<TAB>tag'" train --model "$M" --train "$W/bad.conll" -o "$W/bad"
expect_error "unknown method" "method 'lorax': 'lorax' is not a method; use full, or any of" "${bad_train[@]}" --method lorax
expect_error "two placements of one adapter" "houlsby and pfeiffer are two placements of one adapter" "${bad_train[@]}" --method houlsby+pfeiffer
expect_error "(IA)3 on no module" "--ia3-target: role 'keys' is not one of" "${bad_train[@]}" --method ia3 --ia3-target keys
expect_error "early stopping without a dev file" "--early-stopping follows the dev score: pass --dev" "${bad_train[@]}" --early-stopping 2
expect_error "prompt and prefix together" "prompt_tuning and prefix_tuning both add virtual tokens" "${bad_train[@]}" --method prompt+prefix
expect_error "virtual tokens filling the positions" "--virtual-tokens 40 leaves no room in the model's 40 positions" "${bad_train[@]}" \
  --method prompt --virtual-tokens 40
expect_error "text start without a text" "--prompt-init text needs --prompt-init-text" "${bad_train[@]}" --method prompt --prompt-init text
expect_error "text and virtual tokens beyond the positions" "--max-length 38 with 4 virtual tokens exceeds the model's 40 positions" \
  "${bad_train[@]}" --method prefix --virtual-tokens 4 --max-length 38
expect_error "LoRA rank too large" "rank r = 64 must be in \[1, min" "${bad_train[@]}" --rank 64
"$TRAIN" train "${common[@]}" --train "$W/sst_train.tsv" -o "$W/houlsby" --method houlsby --epochs 1 --no-plot >/dev/null 2>&1 ||
  fail "train houlsby"
cp -r "$W/lora_peft" "$W/lora_causal" && sed -i 's/"SEQ_CLS"/"CAUSAL_LM"/' "$W/lora_causal/adapter_config.json"
expect_error "a PEFT adapter of another task" "adapter_config.json: task_type 'CAUSAL_LM' is not one peft-train runs" \
  eval --model "$M" --adapter "$W/lora_causal" --data "$W/sst_dev.tsv" --predictions "$W/bad"
expect_error "merging a bottleneck adapter" "cannot be merged into the base weights .bottleneck adapters are nonlinear" merge --model "$M" --adapter "$W/houlsby/adapter" -o "$W/bad"
cp -r "$W/lora/adapter" "$W/adapter_r2"
python3 -c "import json,sys; p=sys.argv[1]; c=json.load(open(p)); c['lora']['r']=2; json.dump(c, open(p,'w'))" "$W/adapter_r2/peft_train.json"
expect_error "adapter that does not fit the model" "lora_A.weight' has shape \[4, 32\] but the model's .* has shape \[2, 32\]" \
  eval --model "$M" --adapter "$W/adapter_r2" --data "$W/sst_dev.tsv"
expect_error "dev file with a tag set of another task" "sst_dev.tsv:1: tag '1' is not O, B-<type> or I-<type>" eval --model "$M" --adapter "$W/ner/adapter" --data "$W/sst_dev.tsv"
[[ -s "$W/lora/adapter/adapter_model.safetensors" ]] || fail "an error run damaged an earlier output"

if ((failures)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all peft-train checks passed"
