#!/usr/bin/env bash
# Dequantization against the `gguf` Python package: writes a GGUF with every supported type and the
# package's dequantized values, then runs the C++ comparison on it. Exit 77 (skipped) without the package.
# usage: dequant_python.sh PEFT_TESTS WORK_DIR [PYTHON]
set -euo pipefail
tests=$1 work=$2 py=${3:-python3}
"$py" -c "import numpy, gguf" 2>/dev/null || { echo "skipped: Python lacks numpy or gguf"; exit 77; }
rm -rf "$work" && mkdir -p "$work"
"$py" "$(dirname "$0")/make_dequant_fixture.py" "$work"
PEFT_DEQUANT_FIXTURE="$work" "$tests" --run_test=gguf/dequantizes_bit_exactly_as_the_gguf_package --log_level=message
