#!/usr/bin/env python3
"""One measurement of PyTorch eager + transformers on a GGUF decoder (dequantized to fp32 by
transformers' `gguf_file=` loader): the prompt step and greedy decoding with the KV cache, timed
separately, and the peak resident memory. Prints one JSON object.

  pytorch_decode.py MODEL.gguf THREADS NEW_TOKENS ID...
"""
import json
import os
import resource
import sys
import time

import torch
import transformers

path, threads, new_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ids = [int(x) for x in sys.argv[4:]]
torch.set_num_threads(threads)
transformers.logging.set_verbosity_error()
model = transformers.AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                          dtype=torch.float32)
model.eval()
with torch.inference_mode():
    x = torch.tensor([ids])
    t0 = time.perf_counter()
    out = model(x, use_cache=True)
    prompt_s = time.perf_counter() - t0
    past, logits = out.past_key_values, out.logits[0, -1]
    generated = []
    t0 = time.perf_counter()
    for _ in range(new_tokens):
        nxt = int(torch.argmax(logits))
        generated.append(nxt)
        out = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
        past, logits = out.past_key_values, out.logits[0, -1]
    decode_s = time.perf_counter() - t0
print(json.dumps({"prompt_tokens": len(ids), "prompt_seconds": prompt_s, "new_tokens": new_tokens, "decode_steps": new_tokens,
                  "decode_seconds": decode_s, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "ids": generated, "torch": torch.__version__, "transformers": transformers.__version__}))
