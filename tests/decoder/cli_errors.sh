#!/usr/bin/env bash
# Bad input to peft-train's decoder commands: each case must exit non-zero with a message naming
# what was wrong (the file, the option, the value). Cases that need the real model run only when
# scripts/find_smollm2.sh finds it.
# usage: cli_errors.sh PEFT_TRAIN WORK_DIR
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
TRAIN=$1 W=$2
rm -rf "$W" && mkdir -p "$W"
failures=0
expect_error() {  # expect_error <name> <regex> <args...>
  local name=$1 pattern=$2
  shift 2
  if "$TRAIN" "$@" </dev/null >"$W/out" 2>"$W/err"; then
    echo "FAIL: $name: exited 0"; failures=$((failures + 1))
  elif ! grep -Eq -- "$pattern" "$W/err"; then
    echo "FAIL: $name: message '$(cat "$W/err")' does not match '$pattern'"; failures=$((failures + 1))
  else
    echo "ok: $name: $(head -1 "$W/err")"
  fi
}
echo "plain text" >"$W/text.gguf"
printf 'GGUF\x03\x00\x00\x00' >"$W/short.gguf"
expect_error "missing model file" "cannot open '$W/none.gguf'" generate --model "$W/none.gguf" -p hi
expect_error "a directory as the model" "'$W' is not a regular file" generate --model "$W" -p hi
expect_error "not a GGUF file" "GGUF '$W/text.gguf': not a GGUF file" generate --model "$W/text.gguf" -p hi
expect_error "truncated header" "GGUF '$W/short.gguf': truncated at byte 8" score --model "$W/short.gguf" --ids 1
model=${PEFT_SMOLLM2_GGUF:-$("$here/../../scripts/find_smollm2.sh" 2>/dev/null || true)}
if [ -n "$model" ] && [ -f "$model" ]; then
  head -c 3000000 "$model" >"$W/cut.gguf"
  expect_error "file cut inside the tensors" "GGUF '$W/cut.gguf': tensor '.*' .* runs past the end of the data region" \
    generate --model "$W/cut.gguf" -p hi
  python3 "$here/poison_gguf.py" "$model" "$W/inf-scale.gguf" token_embd.weight
  expect_error "infinite scale in a quantized tensor" \
    "GGUF '$W/inf-scale.gguf': tensor 'token_embd.weight' holds 32 NaN or infinite value\(s\) \(the first at element 0\)" \
    generate --model "$W/inf-scale.gguf" -p hi
  python3 "$here/poison_gguf.py" "$model" "$W/nan-norm.gguf" output_norm.weight
  expect_error "NaN in an F32 tensor" "GGUF '$W/nan-norm.gguf': tensor 'output_norm.weight' holds 1 NaN or infinite value" \
    score --model "$W/nan-norm.gguf" --ids "1 2"
  rm -f "$W/inf-scale.gguf" "$W/nan-norm.gguf"
  expect_error "token id out of range" "--ids: '99999999' is not a token id in \[0, 49152\)" generate --model "$model" --ids "1 99999999"
  expect_error "token id not a number" "--ids: 'x1' is not a token id" score --model "$model" --ids "1,x1" --logits-json "$W/l.json"
  expect_error "top-p out of range" "top_p 0 must be in \(0, 1\]" generate --model "$model" -p hi --top-p 0
  expect_error "negative temperature" "temperature -1 must be 0" generate --model "$model" -p hi --temperature -1
  expect_error "absurd thread count" "--threads 100000 is more than 4 x the [0-9]+ CPUs" generate --model "$model" -p hi --threads 100000
  expect_error "merge without adapter" "--merge needs --adapter" generate --model "$model" -p hi --merge
  expect_error "missing adapter" "$W/no-adapter" generate --model "$model" -p hi --adapter "$W/no-adapter"
  expect_error "empty prompt file" "the prompt is empty" generate --model "$model" --prompt-file /dev/null
  expect_error "score with nothing to score" "score needs --text-file, --ids or --logits-json" score --model "$model"
  expect_error "one-token text" "fewer than 2 tokens" score --model "$model" --ids 1
  [ -e "$W/l.json" ] && { echo "FAIL: a failed score left $W/l.json"; failures=$((failures + 1)); }
else
  echo "note: SmolLM2 not found; the cases that need it were not run"
fi
exit $((failures > 0))
