#!/usr/bin/env python3
"""An independent Llama forward in numpy over a GGUF file, the reference for peft's decoder.

Weights come from the `gguf` package's own reader and `dequantize` (fp32); the math is written here
from the Llama definition (RMS norm, rotary embedding pairing adjacent dimensions as GGUF stores
Q and K, grouped-query causal attention, SwiGLU, tied or separate output). Float64 accumulation is
avoided on purpose: everything is float32, as peft computes.

  llama_reference.py MODEL.gguf logits IDS...        -> JSON {"logits": [...]} at the last position
  llama_reference.py MODEL.gguf greedy N IDS...      -> JSON {"ids": [...]} of N greedy tokens
  llama_reference.py MODEL.gguf nll IDS...           -> JSON {"nll": [...]} per predicted token
"""
import json
import sys

import numpy as np
import gguf


class Llama:
    def __init__(self, path):
        r = gguf.GGUFReader(path)
        f = {k: v for k, v in r.fields.items()}

        def scalar(key, default=None):
            if key not in f:
                return default
            v = f[key]
            return v.parts[v.data[0]][0].item()

        self.n_layer = int(scalar("llama.block_count"))
        self.n_head = int(scalar("llama.attention.head_count"))
        self.n_kv = int(scalar("llama.attention.head_count_kv", self.n_head))
        self.hidden = int(scalar("llama.embedding_length"))
        self.eps = float(scalar("llama.attention.layer_norm_rms_epsilon"))
        self.theta = float(scalar("llama.rope.freq_base", 10000.0))
        self.head_dim = self.hidden // self.n_head
        self.rope_dims = int(scalar("llama.rope.dimension_count", self.head_dim))
        self.w = {}
        for t in r.tensors:
            shape = [int(x) for x in reversed(t.shape.tolist())]
            self.w[t.name] = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)
        self.out = self.w.get("output.weight", self.w["token_embd.weight"])

    def norm(self, x, g):
        ms = np.mean(x * x, axis=-1, keepdims=True, dtype=np.float32)
        return (x / np.sqrt(ms + np.float32(self.eps))).astype(np.float32) * g

    def rope(self, x, pos):  # x: (tokens, heads, d); adjacent pairs (2i, 2i+1)
        d = self.rope_dims
        inv = (1.0 / (self.theta ** (np.arange(0, d, 2, dtype=np.float64) / d)))
        ang = np.outer(np.asarray(pos, dtype=np.float64), inv)
        c = np.cos(ang).astype(np.float32)[:, None, :]
        s = np.sin(ang).astype(np.float32)[:, None, :]
        y = x.copy()
        a, b = x[..., 0:d:2], x[..., 1:d:2]
        y[..., 0:d:2] = a * c - b * s
        y[..., 1:d:2] = a * s + b * c
        return y

    def step(self, ids, cache):
        """Runs `ids` after the cached tokens; returns logits for every new position."""
        past = cache["n"]
        pos = list(range(past, past + len(ids)))
        x = self.w["token_embd.weight"][ids]
        group = self.n_head // self.n_kv
        for l in range(self.n_layer):
            p = f"blk.{l}."
            h = self.norm(x, self.w[p + "attn_norm.weight"])
            q = (h @ self.w[p + "attn_q.weight"].T).reshape(len(ids), self.n_head, self.head_dim)
            k = (h @ self.w[p + "attn_k.weight"].T).reshape(len(ids), self.n_kv, self.head_dim)
            v = (h @ self.w[p + "attn_v.weight"].T).reshape(len(ids), self.n_kv, self.head_dim)
            q, k = self.rope(q, pos), self.rope(k, pos)
            K = np.concatenate([cache["k"][l], k]) if past else k
            V = np.concatenate([cache["v"][l], v]) if past else v
            cache["k"][l], cache["v"][l] = K, V
            out = np.empty((len(ids), self.n_head, self.head_dim), dtype=np.float32)
            for hd in range(self.n_head):
                kv = hd // group
                s = (q[:, hd, :] @ K[:, kv, :].T) / np.float32(np.sqrt(self.head_dim))
                mask = np.arange(K.shape[0])[None, :] > np.asarray(pos)[:, None]
                s = np.where(mask, -np.inf, s).astype(np.float32)
                s = np.exp(s - s.max(axis=-1, keepdims=True))
                s = s / s.sum(axis=-1, keepdims=True)
                out[:, hd, :] = s @ V[:, kv, :]
            x = x + out.reshape(len(ids), -1) @ self.w[p + "attn_output.weight"].T
            h = self.norm(x, self.w[p + "ffn_norm.weight"])
            g = h @ self.w[p + "ffn_gate.weight"].T
            u = h @ self.w[p + "ffn_up.weight"].T
            x = x + ((g / (1 + np.exp(-g))) * u) @ self.w[p + "ffn_down.weight"].T
        cache["n"] = past + len(ids)
        return self.norm(x, self.w["output_norm.weight"]) @ self.out.T

    def new_cache(self):
        return {"n": 0, "k": [None] * self.n_layer, "v": [None] * self.n_layer}


def main():
    model = Llama(sys.argv[1])
    mode = sys.argv[2]
    if mode == "logits":
        ids = [int(x) for x in sys.argv[3:]]
        print(json.dumps({"logits": model.step(ids, model.new_cache())[-1].tolist()}))
    elif mode == "greedy":
        n = int(sys.argv[3])
        ids = [int(x) for x in sys.argv[4:]]
        cache = model.new_cache()
        logits = model.step(ids, cache)[-1]
        out = []
        for _ in range(n):
            t = int(np.argmax(logits))
            out.append(t)
            logits = model.step([t], cache)[-1]
        print(json.dumps({"ids": out}))
    elif mode == "nll":
        ids = [int(x) for x in sys.argv[3:]]
        logits = model.step(ids, model.new_cache()).astype(np.float64)
        m = logits.max(axis=-1, keepdims=True)
        logp = logits - m - np.log(np.exp(logits - m).sum(axis=-1, keepdims=True))
        print(json.dumps({"nll": [float(-logp[i, ids[i + 1]]) for i in range(len(ids) - 1)]}))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
