#!/usr/bin/env python3
"""The ranks AdaLoRA gave each layer and role: reads an ADALORA adapter's adapter_config.json
(rank_pattern, init_r), prints a table (layers x roles) and draws it as an SVG heat map with gnuplot.

  scripts/adalora_ranks.py ADAPTER_DIR OUT.svg [TITLE]
"""
import json
import re
import subprocess
import sys

adapter, out = sys.argv[1], sys.argv[2]
title = sys.argv[3] if len(sys.argv) > 3 else "AdaLoRA ranks"
config = json.load(open(f"{adapter}/adapter_config.json"))
if config.get("peft_type") != "ADALORA":
    sys.exit(f"{adapter}/adapter_config.json: peft_type is {config.get('peft_type')!r}, not ADALORA")
init_r, pattern = config["init_r"], config.get("rank_pattern") or {}
roles = {"attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
         "attention.output.dense": "attn out", "intermediate.dense": "ffn in", "output.dense": "ffn out"}
ranks = {}  # (layer, role) -> kept triplets
for key, kept in pattern.items():
    m = re.search(r"\.layer\.(\d+)\.(.+)\.lora_E$", key)
    if not m:
        continue
    ranks[(int(m.group(1)), roles.get(m.group(2), m.group(2)))] = sum(kept)
if not ranks:
    sys.exit(f"{adapter}: no rank_pattern (nothing was pruned, every module kept init_r = {init_r})")
layers = sorted({l for l, _ in ranks})
cols = [r for r in roles.values() if any(c == r for _, c in ranks)]
print("layer  " + "  ".join(f"{c:>8}" for c in cols))
for l in layers:
    print(f"{l:>5}  " + "  ".join(f"{ranks.get((l, c), init_r):>8}" for c in cols))
print(f"total {sum(ranks.values())} of {init_r * len(ranks)} triplets (init_r {init_r}, target_r {config['target_r']})")
data = "\n".join(f"{i} {j} {ranks.get((l, c), init_r)}" for j, l in enumerate(layers) for i, c in enumerate(cols))
script = f"""set terminal svg size {160 + 110 * len(cols)},{120 + 60 * len(layers)} font 'sans,12' background '#ffffff'
set output '{out}'
set title '{title}'
set xtics ({", ".join(f'"{c}" {i}' for i, c in enumerate(cols))})
set ytics ({", ".join(f'"layer {l}" {j}' for j, l in enumerate(layers))})
set xrange [-0.5:{len(cols) - 0.5}]
set yrange [-0.5:{len(layers) - 0.5}] reverse
set cbrange [0:{init_r}]
set cblabel 'rank kept (of {init_r})'
set palette defined (0 '#f7fbff', 1 '#08306b')
unset key
$d << EOD
{data}
EOD
plot $d using 1:2:3 with image, $d using 1:2:(sprintf('%d', $3)) with labels tc rgb '#d62728' font 'sans,13'
"""
subprocess.run(["gnuplot"], input=script.encode(), check=True)
print(f"plot: {out}")
