#!/usr/bin/env bash
# Installs what is missing, builds everything (the CUDA targets too when nvcc is present) and runs
# every test: the Boost.Test suites, compile-fail tests, the examples, the header self-containment
# build, and a consumer project built against an installed package.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
peft_install_deps

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

echo "== install + consumer project"
cmake --install "$BUILD" >/dev/null
cmake -S tests/consumer -B "$BUILD/consumer" -DCMAKE_PREFIX_PATH="$PREFIX" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD/consumer" -j"$JOBS" >/dev/null
"$BUILD/consumer/consumer"

echo "== all tests passed"
