#!/usr/bin/env python3
"""Sequence-classification inference in PyTorch eager (transformers, plus Hugging Face PEFT when an
adapter is given), batched as `peft-train eval` batches: examples sorted by token count (stable),
batches of --batch, each padded to its longest sequence, at most --max-length tokens. Times only the
model's forward passes (as peft-train eval's "seconds" does) and prints one JSON line.

  pytorch_eval.py MODEL_DIR DATA.tsv [--adapter DIR] [--batch 64] [--threads 2] [--max-length 128]
"""
import argparse
import csv
import json
import resource
import time

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("data")
ap.add_argument("--adapter")
ap.add_argument("--batch", type=int, default=64)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--max-length", type=int, default=128)
a = ap.parse_args()

import torch  # noqa: E402
import transformers  # noqa: E402

torch.set_num_threads(a.threads)
with open(a.data, newline="") as f:
    rows = [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r]
texts, gold = [r[0] for r in rows], [r[-1] for r in rows]
tok = transformers.AutoTokenizer.from_pretrained(a.model)
if a.adapter:
    import peft
    cfg = peft.PeftConfig.from_pretrained(a.adapter)
    labels = json.load(open(f"{a.adapter}/peft_train.json"))["labels"]
    base = transformers.BertForSequenceClassification.from_pretrained(a.model, num_labels=len(labels))
    model = peft.PeftModel.from_pretrained(base, a.adapter)
else:
    card = json.load(open(f"{a.model}/peft_train.json"))
    labels = card["labels"]
    model = transformers.BertForSequenceClassification.from_pretrained(a.model, num_labels=len(labels))
model.eval()

enc = tok(texts, truncation=True, max_length=a.max_length)["input_ids"]
order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
batches = []
for s in range(0, len(order), a.batch):
    idx = order[s:s + a.batch]
    n = max(len(enc[i]) for i in idx)
    ids = torch.tensor([enc[i] + [tok.pad_token_id] * (n - len(enc[i])) for i in idx])
    mask = torch.tensor([[1] * len(enc[i]) + [0] * (n - len(enc[i])) for i in idx])
    batches.append((idx, ids, mask))

predicted = [None] * len(texts)
with torch.inference_mode():
    start = time.perf_counter()
    for idx, ids, mask in batches:
        logits = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).logits
        for i, k in zip(idx, logits.argmax(-1).tolist()):
            predicted[i] = labels[k]
    seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "examples": len(texts), "accuracy": sum(p == g for p, g in zip(predicted, gold)) / len(texts),
                  "predicted": predicted, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                  "torch": torch.__version__, "transformers": transformers.__version__}))
