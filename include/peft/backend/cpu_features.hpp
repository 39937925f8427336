#pragma once
/// \file What the CPU backend was compiled for and what the CPU running it has.
///
/// Eigen picks its kernels (SSE2, AVX2 + FMA, AVX-512) from the compiler's target flags, so a
/// program's speed depends on how it was built. `cpu_kernels()` says which kernels a translation unit
/// got, for benchmark output and `--version`; `require_cpu_features()` turns running an AVX2 build on
/// a CPU without AVX2 into a clear error instead of an illegal-instruction crash.

#include <Eigen/Core>
#include <string>
#include <vector>

#include "peft/core/error.hpp"

namespace peft::backend {

/// The instruction sets this translation unit was compiled to use beyond x86-64's baseline, which the
/// CPU must have (empty for a baseline build or another architecture).
inline std::vector<std::string> compiled_cpu_features() {
  std::vector<std::string> f;
#if defined(__AVX2__)
  f.emplace_back("avx2");
#endif
#if defined(__FMA__)
  f.emplace_back("fma");
#endif
#if defined(__F16C__)
  f.emplace_back("f16c");
#endif
#if defined(__AVX512F__)
  f.emplace_back("avx512f");
#endif
#if defined(__AVX512BW__)
  f.emplace_back("avx512bw");
#endif
#if defined(__AVX512DQ__)
  f.emplace_back("avx512dq");
#endif
#if defined(__AVX512VL__)
  f.emplace_back("avx512vl");
#endif
#if defined(__AVX512BF16__)
  f.emplace_back("avx512bf16");
#endif
  return f;
}

/// Whether the running CPU has feature `name` (a name of `compiled_cpu_features`).
inline bool cpu_has(const std::string& name) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (name == "avx2") return __builtin_cpu_supports("avx2");
  if (name == "fma") return __builtin_cpu_supports("fma");
  if (name == "f16c") return __builtin_cpu_supports("f16c");
  if (name == "avx512f") return __builtin_cpu_supports("avx512f");
  if (name == "avx512bw") return __builtin_cpu_supports("avx512bw");
  if (name == "avx512dq") return __builtin_cpu_supports("avx512dq");
  if (name == "avx512vl") return __builtin_cpu_supports("avx512vl");
  if (name == "avx512bf16") return __builtin_cpu_supports("avx512bf16");
#endif
  (void)name;
  return false;
}

/// Throws `peft::error` naming the missing instruction sets when the program was compiled for some
/// that this CPU lacks. Call it first thing in `main`, before any kernel runs.
inline void require_cpu_features() {
  std::string missing;
  for (const auto& f : compiled_cpu_features())
    if (!cpu_has(f)) missing += (missing.empty() ? "" : ", ") + f;
  if (!missing.empty())
    throw error("this program was compiled for instruction sets this CPU does not have (" + missing +
                "); rebuild it with -DPEFT_CPU_ARCH=none (or the -march of this machine)");
}

/// One line naming the kernels of this translation unit: Eigen's version, the instruction sets it was
/// compiled for beyond the baseline, and the floats per vector of Eigen's kernels (4: SSE, 8: AVX,
/// 16: AVX-512). Eigen's own `SimdInstructionSetsInUse()` does not mention AVX2 or FMA.
inline std::string cpu_kernels() {
  std::string sets;
  for (const auto& f : compiled_cpu_features()) sets += (sets.empty() ? "" : " ") + f;
  return "Eigen " + std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) + "." +
         std::to_string(EIGEN_MINOR_VERSION) + ", compiled for " + (sets.empty() ? "the x86-64 baseline (SSE2)" : sets) + ", " +
         std::to_string(Eigen::internal::packet_traits<float>::size) + " floats per vector";
}

}  // namespace peft::backend
