#!/usr/bin/env python3
"""Decoder speed and memory side by side: peft-train generate (weights kept quantized, and --dense)
against PyTorch eager + transformers on the same GGUF (dequantized to fp32), one process per
measurement, rounds interleaved, the same prompt ids and the same number of greedily generated
tokens. Prints a table of medians and ratios and writes it as JSON.

  run.py PEFT_TRAIN MODEL.gguf [--python VENV_PYTHON] [--threads 2] [--rounds 3] [--prompt-tokens 128]
         [--new-tokens 64] [--json OUT.json]

The PyTorch side needs a Python with torch, transformers, gguf and accelerate (e.g. a venv:
`python3 -m venv v && v/bin/pip install torch transformers gguf accelerate`).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

here = Path(__file__).parent
ap = argparse.ArgumentParser()
ap.add_argument("peft")
ap.add_argument("model")
ap.add_argument("--python", default=sys.executable)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--prompt-tokens", type=int, default=128)
ap.add_argument("--new-tokens", type=int, default=64)
ap.add_argument("--json", default="decoder_benchmark.json", help="where to write the table and every run")
a = ap.parse_args()

env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
text = (here.parent.parent / "tests" / "decoder" / "perplexity.txt").read_text()
r = subprocess.run([a.peft, "score", "--model", a.model, "--text-file", "-", "--with-ids"], input=text, capture_output=True,
                   text=True, env=env, check=True)
ids = json.loads(r.stdout)["ids"][: a.prompt_tokens]
ids_arg = " ".join(map(str, ids))


def peft_run(extra):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        out = subprocess.run([a.peft, "generate", "--model", a.model, "--ids", ids_arg, "-n", str(a.new_tokens), "--ignore-eos",
                              "--json", "--threads", str(a.threads), "--stats-json", f.name, *extra],
                             capture_output=True, text=True, env=env, check=True)
        s = json.loads(Path(f.name).read_text())
        s["ids"] = json.loads(out.stdout.splitlines()[0])["ids"]
        return s


def torch_run():
    out = subprocess.run([a.python, str(here / "pytorch_decode.py"), a.model, str(a.threads), str(a.new_tokens), *map(str, ids)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


configs = {"peft (quantized weights)": lambda: peft_run([]), "peft --dense (fp32 weights)": lambda: peft_run(["--dense"]),
           "PyTorch eager (fp32)": torch_run}
runs = {k: [] for k in configs}
for rnd in range(a.rounds):
    for name, fn in configs.items():
        runs[name].append(fn())
        print(f"round {rnd + 1} {name}: done", file=sys.stderr)

rows = {}
for name, rs in runs.items():
    rows[name] = {"prompt_tokens_per_s": statistics.median(r["prompt_tokens"] / r["prompt_seconds"] for r in rs),
                  "decode_tokens_per_s": statistics.median(r["decode_steps"] / r["decode_seconds"] for r in rs),
                  "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rs)}
torch_row = rows["PyTorch eager (fp32)"]
same = all(r["ids"] == runs["PyTorch eager (fp32)"][0]["ids"] for rs in runs.values() for r in rs)
print(f"\n{len(ids)}-token prompt, {a.new_tokens} greedy tokens, {a.threads} threads, median of {a.rounds} rounds "
      f"(PyTorch {runs['PyTorch eager (fp32)'][0]['torch']}, transformers {runs['PyTorch eager (fp32)'][0]['transformers']})")
print(f"{'configuration':30} {'prompt tok/s':>13} {'decode tok/s':>13} {'peak RSS MB':>12} {'decode vs PyTorch':>18} {'memory vs PyTorch':>18}")
for name, row in rows.items():
    print(f"{name:30} {row['prompt_tokens_per_s']:13.1f} {row['decode_tokens_per_s']:13.1f} {row['peak_rss_mb']:12.0f} "
          f"{row['decode_tokens_per_s'] / torch_row['decode_tokens_per_s']:17.2f}x {row['peak_rss_mb'] / torch_row['peak_rss_mb']:17.2f}x")
print(f"generated tokens identical across all runs: {same}")
Path(a.json).write_text(json.dumps({"machine": platform.processor() or platform.machine(), "threads": a.threads,
                                    "prompt_tokens": len(ids), "new_tokens": a.new_tokens, "rounds": a.rounds, "rows": rows,
                                    "identical_tokens": same, "runs": runs}, indent=1))
