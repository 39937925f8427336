#!/usr/bin/env python3
"""peft against PyTorch on the same CPU, in one run: the BERT training step (bench_bert_step against
pytorch_step.py: same shapes, dropout, optimizer and batch) and sequence-classification inference
(`peft-train eval` against transformers + Hugging Face PEFT on the same batches). Every measurement is
a process of its own (so its peak resident memory is its own), rounds are interleaved, and the table
reports medians over rounds and the ratio peft / PyTorch. It prints the table, writes every run as
JSON, with --markdown writes the table as a markdown page, and with --update-doc replaces the text
between the markers `<!-- side-by-side:begin -->` and `<!-- side-by-side:end -->` of a page
(docs/benchmarks.md is regenerated so).

  run.py --bench BUILD/benchmarks/bench_bert_step --peft-train BUILD/examples/peft-train \
         --python VENV/bin/python [--python /usr/bin/python3 ...] [--rounds 3] [--threads 2] \
         [--model MINILM_DIR] [--json out.json] [--markdown out.md] [--update-doc docs/benchmarks.md]
         [--skip-inference] [--skip-training]

Each --python is one PyTorch build (e.g. a venv with torch, transformers and peft from PyPI, and
Debian's python3-torch); ratios are taken against the faster one. Without any Python that imports
torch, transformers and peft the comparison is skipped with a message (exit 0).
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

here = Path(__file__).resolve().parent
root = here.parent.parent
ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--bench", required=True, help="bench_bert_step")
ap.add_argument("--peft-train", help="peft-train (for the inference rows)")
ap.add_argument("--python", action="append", default=[], help="a Python with torch, transformers and peft (repeatable)")
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--model", help="all-MiniLM-L6-v2 directory (default: scripts/find_minilm.sh)")
ap.add_argument("--data", default=str(root / "data/sst2/dev.tsv"))
ap.add_argument("--train-data", default=str(root / "data/sst2/train.tsv"))
ap.add_argument("--adapter", help="a LoRA adapter written by peft-train train (default: one trained for 50 steps here)")
ap.add_argument("--work", help="scratch directory (default: a temporary one)")
ap.add_argument("--json", default="side_by_side.json")
ap.add_argument("--markdown")
ap.add_argument("--update-doc", help="a markdown page whose side-by-side markers enclose the table to replace")
ap.add_argument("--skip-training", action="store_true")
ap.add_argument("--skip-inference", action="store_true")
ap.add_argument("--configs", default="minilm/lora,minilm/full,minilm/bitfit,bert_base/lora,minilm/lora_bf16,bert_base/lora_bf16,"
                "minilm/dora",
                help="training configurations, shape/method; METHOD_bf16 keeps peft's frozen weights in bf16 and is "
                     "compared with PyTorch's fp32 METHOD")
a = ap.parse_args()

pythons = [p for p in (a.python or [sys.executable])
           if subprocess.run([p, "-c", "import torch, transformers, peft"], capture_output=True).returncode == 0]
if not pythons:
    print("side-by-side benchmark skipped: no Python given can import torch, transformers and peft "
          "(python3 -m venv v && v/bin/pip install torch transformers peft; or apt-get install python3-torch)")
    sys.exit(0)


class rusage_popen(subprocess.Popen):
    """Popen that reaps its child with wait4, keeping the child's own resource usage."""
    rusage = None

    def _try_wait(self, wait_flags):
        try:
            pid, sts, self.rusage = os.wait4(self.pid, wait_flags)
        except ChildProcessError:
            pid, sts = self.pid, 0
        return pid, sts


def run_measured(cmd, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    p = rusage_popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out, err = p.communicate()
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(map(str, cmd))}\n{err[-3000:]}")
    lines = out.strip().splitlines()
    return lines, (p.rusage.ru_maxrss / 1024.0 if p.rusage else float("nan"))


def cpu_description():
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), platform.processor())
    flags = set(next((l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags")), []))
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    field = lambda name: next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.split(":")[0].strip() == name), "?")
    return f"{model} (family {field('cpu family')}, model {field('model')})", isa, os.cpu_count()


# ---- training step ------------------------------------------------------------------------------------
def peft_step(shape, method, threads):
    lines, rss = run_measured([a.bench, f"--benchmark_filter=^{shape}/{method}/", "--benchmark_format=json"], threads)
    data = json.loads("\n".join(lines))
    med = next(b for b in data["benchmarks"] if b.get("aggregate_name") == "median")
    return {"ms_per_step": med["real_time"], "peak_rss_mb": rss, "trainable_params": med["trainable_params"],
            "kernels": data["context"].get("peft_kernels", "?")}


def torch_step(python, shape, method, threads):
    method = method.removesuffix("_bf16")  # PyTorch's side is always fp32
    lines, rss = run_measured([python, str(here / "pytorch_step.py"), shape, method, "--threads", str(threads)], threads)
    r = json.loads(lines[-1])
    r["peak_rss_mb"] = rss
    return r


def median(rs, key):
    return statistics.median(r[key] for r in rs)


results = {"cpu": cpu_description(), "threads": a.threads, "rounds": a.rounds, "training": {}, "inference": {},
           "pythons": pythons}
model, isa, ncpu = results["cpu"]
print(f"CPU: {model} ({ncpu} CPUs; {', '.join(isa)}); {a.threads} threads; median of {a.rounds} rounds", file=sys.stderr)

train_rows = []
if not a.skip_training:
    configs = [(c.split("/")[0], c.split("/")[1], a.threads) for c in a.configs.split(",")]
    configs.append(("minilm", "lora", 1))  # thread scaling
    runs = {c: {"peft": [], **{p: [] for p in pythons}} for c in configs}
    for rnd in range(a.rounds):
        for c in configs:
            shape, method, threads = c
            runs[c]["peft"].append(peft_step(shape, method, threads))
            for p in pythons:
                runs[c][p].append(torch_step(p, shape, method, threads))
            print(f"round {rnd + 1}: {shape}/{method} x{threads} done", file=sys.stderr)
    for c, by in runs.items():
        shape, method, threads = c
        peft_ms, peft_rss = median(by["peft"], "ms_per_step"), median(by["peft"], "peak_rss_mb")
        torch_ms = {p: median(by[p], "ms_per_step") for p in pythons}
        best = min(pythons, key=lambda p: torch_ms[p])
        row = {"config": f"{shape}/{method}", "threads": threads, "peft_ms": peft_ms, "torch_ms": torch_ms[best],
               "torch_ms_all": torch_ms, "ratio": peft_ms / torch_ms[best], "peft_rss_mb": peft_rss,
               "torch_rss_mb": median(by[best], "peak_rss_mb"), "torch_build": by[best][0]["torch"],
               "torch_cpu_capability": by[best][0]["cpu_capability"], "peft_kernels": by["peft"][0]["kernels"],
               "trainable_params": int(by["peft"][0]["trainable_params"])}
        row["rss_ratio"] = row["peft_rss_mb"] / row["torch_rss_mb"]
        train_rows.append(row)
        results["training"][f"{shape}/{method}/threads={threads}"] = {"row": row, "runs": by}

# ---- inference ----------------------------------------------------------------------------------------
infer_rows = []
if not a.skip_inference and a.peft_train:
    model_dir = a.model or subprocess.run([str(root / "scripts/find_minilm.sh")], capture_output=True, text=True,
                                          check=True).stdout.strip()
    work = Path(a.work or tempfile.mkdtemp(prefix="peft-side-by-side-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    adapter = a.adapter
    if not adapter:
        subprocess.run([a.peft_train, "train", "--model", model_dir, "--train", a.train_data, "-o", str(work / "run"), "--overwrite",
                        "--method", "lora", "--rank", "8", "--alpha", "16", "--target", "query,value", "--lr", "1e-3",
                        "--batch-size", "16", "--max-steps", "50", "--seed", "42", "--no-plot", "--threads", str(a.threads)],
                       check=True, env=env, capture_output=True)
        adapter = str(work / "run" / "adapter")
    merged = work / "merged"
    subprocess.run([a.peft_train, "merge", "--model", model_dir, "--adapter", adapter, "-o", str(merged), "--overwrite"],
                   check=True, env=env, capture_output=True)

    def peft_eval(extra):
        pred = work / "pred.tsv"
        lines, rss = run_measured([a.peft_train, "eval", "--data", a.data, "--batch-size", "64", "--threads", str(a.threads),
                                   "--predictions", str(pred), *extra], a.threads)
        r = json.loads(lines[-1])
        r["predicted"] = [l.split("\t")[0] for l in pred.read_text().splitlines()]
        r["peak_rss_mb"] = rss
        return r

    def torch_eval(python, extra):
        lines, rss = run_measured([python, str(here / "pytorch_eval.py"), *extra, a.data, "--batch", "64",
                                   "--threads", str(a.threads)], a.threads)
        r = json.loads(lines[-1])
        r["peak_rss_mb"] = rss
        return r

    cases = {"LoRA adapter (unmerged)": (["--model", model_dir, "--adapter", adapter], [model_dir, "--adapter", adapter]),
             "LoRA merged": (["--model", str(merged)], [str(merged)]),
             "LoRA adapter, peft's frozen weights bf16": (["--model", model_dir, "--adapter", adapter, "--frozen-weights", "bf16"],
                                                         [model_dir, "--adapter", adapter])}
    runs = {c: {"peft": [], **{p: [] for p in pythons}} for c in cases}
    for rnd in range(a.rounds):
        for c, (peft_args, torch_args) in cases.items():
            runs[c]["peft"].append(peft_eval(peft_args))
            for p in pythons:
                runs[c][p].append(torch_eval(p, torch_args))
            print(f"round {rnd + 1}: inference, {c} done", file=sys.stderr)
    for c, by in runs.items():
        n = by["peft"][0]["examples"]
        peft_s = median(by["peft"], "seconds")
        torch_s = {p: median(by[p], "seconds") for p in pythons}
        best = min(pythons, key=lambda p: torch_s[p])
        agree = sum(x == y for x, y in zip(by["peft"][0]["predicted"], by[best][0]["predicted"]))
        row = {"case": c, "examples": n, "peft_per_s": n / peft_s, "torch_per_s": n / torch_s[best],
               "speedup": torch_s[best] / peft_s, "peft_accuracy": by["peft"][0]["accuracy"],
               "torch_accuracy": by[best][0]["accuracy"], "same_predictions": agree,
               "peft_rss_mb": median(by["peft"], "peak_rss_mb"), "torch_rss_mb": median(by[best], "peak_rss_mb")}
        infer_rows.append(row)
        for r in by.values():
            for x in r:
                x.pop("predicted", None)
        results["inference"][c] = {"row": row, "runs": by}

# ---- report -------------------------------------------------------------------------------------------
out = []
out.append(f"CPU: {model}, {ncpu} CPUs available, ISA: {', '.join(isa)}. {a.threads} threads unless stated; "
           f"median of {a.rounds} interleaved rounds, each measurement a process of its own.")
if train_rows:
    r0 = train_rows[0]
    out.append("")
    out.append(f"Training step (forward, backward, AdamW; dropout 0.1; sequence classification, 2 labels). "
               f"peft: `bench_bert_step`, kernels: {r0['peft_kernels']}. PyTorch {r0['torch_build']} "
               f"(CPU capability {r0['torch_cpu_capability']}), transformers BertForSequenceClassification (SDPA attention), "
               f"Hugging Face PEFT for LoRA. `_bf16` rows: peft's frozen weights stored as bf16, against PyTorch's fp32 step.")
    out.append("")
    out.append("| configuration | threads | trainable params | peft ms/step | PyTorch ms/step | peft / PyTorch time | peft peak RSS MB | PyTorch peak RSS MB | memory ratio |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for r in train_rows:
        out.append(f"| {r['config']} | {r['threads']} | {r['trainable_params']:,} | {r['peft_ms']:.0f} | {r['torch_ms']:.0f} | "
                   f"**{r['ratio']:.2f}** | {r['peft_rss_mb']:.0f} | {r['torch_rss_mb']:.0f} | {r['rss_ratio']:.2f} |")
    one = next((r for r in train_rows if r["threads"] == 1), None)
    two = next((r for r in train_rows if r["threads"] == a.threads and r["config"] == "minilm/lora"), None)
    if one and two:
        out.append("")
        out.append(f"Thread scaling, minilm/lora: peft {one['peft_ms'] / two['peft_ms']:.2f}x from 1 to {a.threads} threads, "
                   f"PyTorch {one['torch_ms'] / two['torch_ms']:.2f}x.")
if infer_rows:
    out.append("")
    out.append(f"Inference: {infer_rows[0]['examples']} sentences of {Path(a.data).name}, all-MiniLM-L6-v2 with a LoRA adapter "
               f"(r 8, query and value), batches of 64 sorted by length; seconds of the forward passes only "
               f"(peft-train eval's `seconds`; PyTorch eager under inference_mode).")
    out.append("")
    out.append("| case | peft sentences/s | PyTorch sentences/s | peft speed-up | accuracy peft / PyTorch | same predictions | peft peak RSS MB | PyTorch peak RSS MB |")
    out.append("|---|---|---|---|---|---|---|---|")
    for r in infer_rows:
        out.append(f"| {r['case']} | {r['peft_per_s']:.0f} | {r['torch_per_s']:.0f} | **{r['speedup']:.2f}x** | "
                   f"{r['peft_accuracy']:.4f} / {r['torch_accuracy']:.4f} | {r['same_predictions']}/{r['examples']} | "
                   f"{r['peft_rss_mb']:.0f} | {r['torch_rss_mb']:.0f} |")
    if len(infer_rows) >= 2:
        out.append("")
        out.append(f"Merged against unmerged in peft: {infer_rows[1]['peft_per_s'] / infer_rows[0]['peft_per_s']:.2f}x the sentences per second.")
text = "\n".join(out)
print(text)
Path(a.json).write_text(json.dumps(results, indent=1))
if a.update_doc:
    page = Path(a.update_doc).read_text()
    begin, end = "<!-- side-by-side:begin -->", "<!-- side-by-side:end -->"
    if begin not in page or end not in page or page.index(begin) > page.index(end):
        sys.exit(f"{a.update_doc}: no '{begin}' ... '{end}' markers to replace between")
    head, rest = page.split(begin, 1)
    Path(a.update_doc).write_text(head + begin + "\n" + text + "\n" + end + rest.split(end, 1)[1])
if a.markdown:
    Path(a.markdown).write_text("# peft against PyTorch (generated)\n\nWritten by `benchmarks/side_by_side/run.py`; "
                                "see docs/benchmarks.md for how it is run and what the figures mean.\n\n" + text + "\n")
