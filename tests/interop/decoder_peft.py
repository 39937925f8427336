#!/usr/bin/env python3
"""Hugging Face PEFT against peft-train on the decoder: PEFT (Python) puts a LoRA adapter, then a DoRA one
(then an LN_TUNING one on the RMS norms, PEFT's Llama defaults, then a VERA one, then PROMPT_TUNING and
PREFIX_TUNING ones with 6 virtual tokens, which peft-train must refuse to merge), on
SmolLM2 (loaded by transformers from the same GGUF, dequantized) on q_proj, k_proj, v_proj, o_proj,
gate_proj, up_proj and down_proj with random, nonzero A and B, saves it, and computes next-token
logits; peft-train applies that adapter to the quantized GGUF model, unmerged and merged, and must
give the same logits (to 1e-3 relative, the parity tolerance: the base weights are the same
dequantized values, only summation order differs). Since q_proj and k_proj carry LoRA, this also
checks that the loader puts GGUF's permuted Q/K rows back in Hugging Face's order.

  decoder_peft.py PEFT_TRAIN MODEL.gguf WORK_DIR
Exits 77 (skipped) when torch, transformers, peft, gguf or accelerate cannot be imported.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

try:
    import numpy as np
    import torch
    import transformers
    import peft
    import gguf  # noqa: F401 (transformers' GGUF loader needs it)
    import accelerate  # noqa: F401
except ImportError as e:
    print(f"skipped: {e}")
    sys.exit(77)

train, model_path, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
work.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
torch.set_num_threads(2)
transformers.logging.set_verbosity_error()
base = transformers.AutoModelForCausalLM.from_pretrained(os.path.dirname(model_path), gguf_file=os.path.basename(model_path),
                                                         dtype=torch.float32)
ids = [1, 9690, 198, 2683, 359, 253, 5356, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198]
failures = 0
projections = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
for kind in ("LoRA", "DoRA", "LN_TUNING", "VERA", "PROMPT_TUNING", "PREFIX_TUNING"):
    if kind == "PROMPT_TUNING":
        cfg = peft.PromptTuningConfig(num_virtual_tokens=6, task_type="CAUSAL_LM")
    elif kind == "PREFIX_TUNING":  # grouped-query attention: the prefix has the key/value width (3 heads x 64)
        cfg = peft.PrefixTuningConfig(num_virtual_tokens=6, task_type="CAUSAL_LM")
    elif kind == "LN_TUNING":  # PEFT's defaults for Llama: input_layernorm, post_attention_layernorm, norm
        cfg = peft.LNTuningConfig(task_type="CAUSAL_LM")
    elif kind == "VERA":  # one shared pair (1536 wide for down_proj's input, 1536 tall for gate/up's output)
        cfg = peft.VeraConfig(r=16, target_modules=projections, projection_prng_key=3, task_type="CAUSAL_LM")
    else:
        cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=projections, lora_dropout=0.0, task_type="CAUSAL_LM",
                              init_lora_weights=False, use_dora=kind == "DoRA")
    model = peft.get_peft_model(base, cfg)
    with torch.no_grad():  # larger B than PEFT's init, so that the adapter visibly moves the logits
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
            if "lora_magnitude_vector" in name:  # DoRA: magnitudes away from the base norms
                p.mul_(torch.empty_like(p).uniform_(0.9, 1.1))
            if "ln_tuning_layers" in name:  # LN tuning: scales away from the base ones
                p.mul_(torch.empty_like(p).uniform_(0.8, 1.2))
            if "vera_lambda" in name:  # VeRA: lambda_b away from 0
                p.uniform_(-0.3, 0.3)
    model.eval()
    adapter = work / ("adapter_" + kind.lower())
    model.save_pretrained(adapter)
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0, -1].double().numpy()
        with model.disable_adapter():
            base_logits = model(torch.tensor([ids])).logits[0, -1].double().numpy()
    moved = float(np.max(np.abs(want - base_logits)) / np.max(np.abs(base_logits)))
    base = model.unload() if hasattr(model, "unload") and not model.peft_config["default"].is_prompt_learning else model.get_base_model()

    for extra in ([], ["--merge"]):
        out = work / "logits.json"
        r = subprocess.run([train, "score", "--model", model_path, "--adapter", str(adapter), *extra, "--ids", " ".join(map(str, ids)),
                            "--logits-json", str(out), "--threads", "2"], capture_output=True, text=True)
        if extra and kind in ("PROMPT_TUNING", "PREFIX_TUNING"):  # virtual tokens are no weight: refused
            ok = r.returncode != 0 and "no weight can hold" in r.stderr
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} peft-train refuses to merge the {kind} adapter: {r.stderr.strip()[:120]}")
            continue
        if r.returncode != 0:
            sys.exit(f"peft-train score {' '.join(extra)} with the {kind} adapter failed:\n{r.stderr}")
        got = np.array(json.loads(out.read_text())["logits"], dtype=np.float64)
        rel = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
        ok = rel <= 1e-3
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} PEFT {kind} adapter in peft-train{' (merged)' if extra else ''}: max relative difference "
              f"{rel:.2e} (the adapter moves the logits by {moved:.2e})")
    if moved < 1e-2:
        print(f"FAIL the {kind} adapter barely changes the logits ({moved:.2e}): the comparison would not show a wrong load")
        failures += 1
sys.exit(1 if failures else 0)
