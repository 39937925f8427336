#!/usr/bin/env bash
# The suites under AddressSanitizer + UndefinedBehaviorSanitizer: builds peft_tests, peft-train and
# make_tiny_model with -fsanitize=address,undefined (PEFT_SANITIZE) in their own build directory and
# runs the unit suite, the trainer's end-to-end test and the hostile-use catalogue. Any report fails
# the run. It takes about an hour on 2 cores (the instrumented build of peft_tests is most of it), so it
# runs apart from ./scripts/test.sh, as the second CI script .ci/sanitize.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
peft_install_deps
BUILD=${PEFT_SANITIZE_BUILD_DIR:-build-sanitize}
JOBS=${PEFT_JOBS:-2}
echo "== configure ($BUILD: ASan + UBSan)"
# -O1 keeps the instrumented build affordable on two cores; the CUDA and benchmark targets are left out.
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DPEFT_SANITIZE=ON \
  -DCMAKE_CXX_FLAGS="-Wno-maybe-uninitialized" -DPEFT_BUILD_TESTS=ON -DPEFT_BUILD_EXAMPLES=ON -DPEFT_BUILD_BENCHMARKS=OFF -DPEFT_ENABLE_CUDA=OFF >"$BUILD.configure.log" 2>&1 ||
  { cat "$BUILD.configure.log"; exit 1; }
echo "== build"
cmake --build "$BUILD" -j"$JOBS" --target peft_tests peft-train make_tiny_model
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1}
export PEFT_SANITIZED=1  # the hostile catalogue relaxes its peak-memory bounds
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
echo "== test under sanitizers"
(cd "$BUILD" && ctest --output-on-failure -j"$JOBS" -R '^(peft_tests|trainer\.end_to_end|trainer\.hostile)$')
echo "== sanitizer run passed"
