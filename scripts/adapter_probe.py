"""What the bottleneck adapters of a peft-train run do on real text (a diagnostic; needs torch and
transformers, see docs/tutorial.md section 10).

Usage: adapter_probe.py <model dir> <tagging file (CoNLL)> <run dir> [<run dir> ...]

Rebuilds each run's adapters (h + up(act(down(h))) on the output h of the wrapped dense layer, act
from the run card) around transformers' BERT with forward hooks, runs the first 300 sentences, and
prints per adapter: the fraction of bottleneck units with a positive pre-activation, the mean norm of
the adapter's output and of the h it is added to, and how token-independent that output is
(|mean over tokens| / mean |.|: 1 means the same vector for every token).
"""
import json
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

torch.set_grad_enabled(False)
ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "gelu": torch.nn.functional.gelu,
               "gelu_new": lambda x: torch.nn.functional.gelu(x, approximate="tanh")}


def read_sentences(path, limit=300):
    sentences, words = [], []
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line:
            if words:
                sentences.append(words)
            words = []
        else:
            words.append(line.split("\t")[0])
    if words:
        sentences.append(words)
    return sentences[:limit]


def probe(model_dir, sentences, run):
    card = json.load(open(f"{run}/adapter/peft_train.json"))
    act = ACTIVATIONS[card["adapter"]["nonlinearity"]]
    weights = load_file(f"{run}/adapter/adapter_model.safetensors")
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    stats, mask = {}, [None]

    def add_adapter(module, key):
        down_w, down_b = weights[key + ".adapter.down.weight"], weights[key + ".adapter.down.bias"]
        up_w, up_b = weights[key + ".adapter.up.weight"], weights[key + ".adapter.up.bias"]

        def hook(_, __, h):
            z = h @ down_w.T + down_b
            out = act(z) @ up_w.T + up_b
            real = mask[0]
            o = out[real]
            stats.setdefault(key, []).append(((z[real] > 0).float().mean().item(), o.norm(dim=-1).mean().item(),
                                              h[real].norm(dim=-1).mean().item(),
                                              (o.mean(0).norm() / o.norm(dim=-1).mean()).item()))
            return h + out

        module.register_forward_hook(hook)

    for name, module in model.named_modules():
        key = "base_model.model.bert." + name
        if key + ".adapter.down.weight" in weights:
            add_adapter(module, key)
    for i in range(0, len(sentences), 50):
        enc = tok(sentences[i:i + 50], is_split_into_words=True, padding=True, return_tensors="pt")
        mask[0] = enc["attention_mask"].bool()
        model(**enc)
    print(f"== {run} ({card['method']}, {card['adapter']['nonlinearity']})")
    print(f"  {'adapter':36s} {'active':>6s} {'|out|':>7s} {'|h|':>7s} {'token-independence':>18s}")
    for key, rows in stats.items():
        n = len(rows)
        mean = [sum(r[j] for r in rows) / n for j in range(4)]
        print(f"  {key.split('encoder.')[1]:36s} {mean[0]:6.3f} {mean[1]:7.2f} {mean[2]:7.2f} {mean[3]:18.2f}")


if __name__ == "__main__":
    sentences = read_sentences(sys.argv[2])
    for run in sys.argv[3:]:
        probe(sys.argv[1], sentences, run)
