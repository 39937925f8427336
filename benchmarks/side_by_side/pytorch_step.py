#!/usr/bin/env python3
"""One BERT sequence-classification training step in PyTorch, the counterpart of bench_bert_step:
forward, backward and an AdamW update, dropout 0.1 active, random token ids, labels i % 2. Prints one
JSON line with the median step time and the peak resident memory of this process.

  pytorch_step.py {minilm,bert_base} {lora,dora,full,bitfit} [--threads 2] [--steps 6] [--batch B] [--seq S]

LoRA is Hugging Face PEFT's (r 8, alpha 16, dropout 0.1 on query and value; the classifier trains as
PEFT's modules_to_save). BitFit trains every bias (linear and layer norm) and the classifier.
"""
import argparse
import json
import resource
import statistics
import time

ap = argparse.ArgumentParser()
ap.add_argument("shape", choices=["minilm", "bert_base"])
ap.add_argument("method", choices=["lora", "dora", "full", "bitfit"])
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--steps", type=int, default=6)
ap.add_argument("--batch", type=int)
ap.add_argument("--seq", type=int, default=128)
ap.add_argument("--attn", default="sdpa", help="transformers attention implementation (sdpa or eager)")
a = ap.parse_args()


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


import torch  # noqa: E402  (imported after argument parsing so that --help is quick)
import transformers  # noqa: E402

torch.set_num_threads(a.threads)
torch.manual_seed(1)
baseline = rss_mb()
shapes = {"minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536, batch=16),
          "bert_base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, batch=8)}
s = dict(shapes[a.shape])
batch = a.batch or s.pop("batch")
s.pop("batch", None)
cfg = transformers.BertConfig(vocab_size=30522, max_position_embeddings=512, num_labels=2, hidden_dropout_prob=0.1,
                              attention_probs_dropout_prob=0.1, **s)
cfg._attn_implementation = a.attn
model = transformers.BertForSequenceClassification(cfg)
if a.method in ("lora", "dora"):
    import peft
    model = peft.get_peft_model(model, peft.LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.1,
                                                       target_modules=["query", "value"], use_dora=a.method == "dora"))
elif a.method == "bitfit":
    for name, p in model.named_parameters():
        p.requires_grad = name.endswith(".bias") or name.startswith("classifier.")
model.train()
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-4)
g = torch.Generator().manual_seed(1)
ids = torch.randint(0, cfg.vocab_size, (batch, a.seq), generator=g)
mask = torch.ones(batch, a.seq, dtype=torch.long)
labels = torch.arange(batch) % 2


def step():
    opt.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    opt.step()


step()  # warm-up: sizes buffers and makes the optimizer state
times = []
for _ in range(a.steps):
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
print(json.dumps({"ms_per_step": statistics.median(times) * 1e3, "steps_ms": [t * 1e3 for t in times],
                  "peak_rss_mb": rss_mb(), "baseline_rss_mb": baseline,
                  "trainable_params": sum(p.numel() for p in params), "tokens": batch * a.seq,
                  "torch": torch.__version__, "transformers": transformers.__version__, "attention": a.attn,
                  "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}))
