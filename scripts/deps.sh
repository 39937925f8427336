#!/usr/bin/env bash
# Installs the Debian 12 packages the build and tests need, when any is missing. Sourced by the
# other scripts; safe to run repeatedly.
set -euo pipefail

PEFT_DEBIAN_PACKAGES=(cmake g++ make libeigen3-dev xtensor-dev nlohmann-json3-dev libicu-dev libboost-test-dev libbenchmark-dev ccache
  libcli11-dev gnuplot-nox openmpi-bin libopenmpi-dev
  clang libclang-rt-14-dev python3 python3-pip)

peft_install_deps() {
  local missing=()
  for p in "${PEFT_DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "== installing: ${missing[*]}"
    local sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # nvcc is optional: put the usual toolkit location on PATH so CMake finds it.
  if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
    export PATH="/usr/local/cuda/bin:$PATH"
  fi
}

# Configures (Release, examples on) and builds the command-line trainer in build directory $1.
peft_build_trainer() {
  cmake -S . -B "$1" -DCMAKE_BUILD_TYPE=Release -DPEFT_BUILD_EXAMPLES=ON >/dev/null
  cmake --build "$1" -j"${PEFT_JOBS:-2}" --target peft-train
}
