#!/usr/bin/env python3
"""peft-train's decoder against the independent numpy forward of llama_reference.py, on the same GGUF.

  parity.py PEFT_TRAIN MODEL.gguf TEXT_FILE

Checks, for five prompts (ChatML-formatted by peft-train): the next-token logits at the end of the
prompt agree to 1e-3 relative (max |difference| / max |logit|); the greedy continuations of 32
tokens are identical (up to the end-of-turn token where peft-train stops); the perplexity of
TEXT_FILE (peft-train's tokens, windows of 256) is within 0.5%; and the answer to "What is the capital of France?"
names Paris. Exits 77 (skipped) when numpy or the gguf package is missing.
"""
import json
import subprocess
import sys
from pathlib import Path

try:
    import numpy as np
    sys.path.insert(0, str(Path(__file__).parent))
    from llama_reference import Llama
except ImportError as e:
    print(f"skipped: {e}")
    sys.exit(77)

peft, model_path, text_file = sys.argv[1], sys.argv[2], sys.argv[3]
env_threads = ["--threads", "2"]
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Complete this Python function: def fibonacci(n):",
    "Name the three primary colours.",
    "Translate to German: Good morning, how are you?",
]


def run(*args):
    r = subprocess.run([peft, *args, "--model", model_path, *env_threads], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"peft-train {' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


ref = Llama(model_path)
failures = 0


def check(ok, what):
    global failures
    print(("ok   " if ok else "FAIL ") + what)
    failures += not ok


for prompt in PROMPTS:
    out = json.loads(run("generate", "--prompt", prompt, "-n", "32", "--json"))
    ids, got = out["prompt_ids"], out["ids"]
    # logits at the last prompt position
    tmp = Path.cwd() / "parity_logits.json"
    run("score", "--ids", " ".join(map(str, ids)), "--logits-json", str(tmp))
    mine = np.array(json.loads(tmp.read_text())["logits"], dtype=np.float64)
    cache = ref.new_cache()
    theirs = ref.step(ids, cache)[-1].astype(np.float64)
    rel = float(np.max(np.abs(mine - theirs)) / np.max(np.abs(theirs)))
    check(rel <= 1e-3, f"logits of {prompt!r}: max relative difference {rel:.2e}")
    # greedy continuation
    want, logits = [], theirs
    for _ in range(32):
        t = int(np.argmax(logits))
        want.append(t)
        if out["finish_reason"] == "stop_token" and len(want) == len(got) + 1:
            break
        logits = ref.step([t], cache)[-1]
    expected = want[: len(got)]
    same = got == expected and (out["finish_reason"] != "stop_token" or len(want) == len(got) + 1)
    check(same, f"greedy continuation of {prompt!r}: {len(got)} tokens ({out['finish_reason']}) {'identical' if same else 'DIFFER: ' + str(got) + ' vs ' + str(want)}")
    if prompt.startswith("What is the capital"):
        check("Paris" in out["text"], f"answer names Paris: {out['text']!r}")

s = json.loads(run("score", "--text-file", text_file, "--window", "256", "--with-ids"))
ids, window = s["ids"], s["window"]
nll, count = 0.0, 0
for start in range(0, len(ids) - 1, window - 1):
    w = ids[start:start + window]
    logits = ref.step(w, ref.new_cache()).astype(np.float64)
    m = logits.max(axis=-1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(axis=-1, keepdims=True))
    nll += float(-sum(logp[i, w[i + 1]] for i in range(len(w) - 1)))
    count += len(w) - 1
ppl_ref, ppl = float(np.exp(nll / count)), s["perplexity"]
check(abs(ppl - ppl_ref) / ppl_ref <= 0.005, f"perplexity of {Path(text_file).name} ({count} tokens): {ppl:.4f} vs reference {ppl_ref:.4f}")
sys.exit(1 if failures else 0)
