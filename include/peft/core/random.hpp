#pragma once
/// \file Reproducible random numbers.
///
/// Two generators with one property: the same seed gives the same numbers on every backend and
/// platform. `counter_uniform` is counter-based (a pure function of seed and index), so a CPU loop and
/// a CUDA kernel draw identical dropout masks. `init_rng` draws parameter initialisations on the host.

#include <cmath>
#include <cstdint>
#include <random>

#include "peft/core/config.hpp"

namespace peft {

/// SplitMix64 finaliser: a bijective mix of 64 bits (Steele, Lea, Flood 2014).
PEFT_HOST_DEVICE std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// The 53 random bits behind `counter_uniform(seed, index)`, given `mixed_seed = splitmix64(seed)` (so
/// that a loop over indices mixes the seed once).
PEFT_HOST_DEVICE std::uint64_t counter_bits53(std::uint64_t mixed_seed, std::uint64_t index) {
  return splitmix64(mixed_seed ^ (index * 0xD1B54A32D192ED03ull)) >> 11;
}

/// Uniform double in [0, 1) that depends only on (seed, index).
PEFT_HOST_DEVICE double counter_uniform(std::uint64_t seed, std::uint64_t index) {
  return static_cast<double>(counter_bits53(splitmix64(seed), index)) * 0x1.0p-53;
}

/// Host generator for initialisation: mt19937_64 with its own uniform/normal transforms, so results do
/// not depend on the standard library's distribution implementations.
class init_rng {
 public:
  explicit init_rng(std::uint64_t seed) : engine_(splitmix64(seed)) {}

  /// Uniform double in [lo, hi).
  double uniform(double lo, double hi) {
    return lo + (hi - lo) * (static_cast<double>(engine_() >> 11) * 0x1.0p-53);
  }
  /// Standard normal by Box-Muller.
  double normal(double mean, double stddev) {
    double u1 = 0;
    while (u1 <= 0) u1 = uniform(0, 1);
    const double u2 = uniform(0, 1);
    return mean + stddev * std::sqrt(-2 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  std::mt19937_64 engine_;
};

/// Derives an independent seed for a named stream (a layer, a method inside a layer).
inline std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream) {
  return splitmix64(seed ^ splitmix64(stream + 0x632BE59BD9B4E019ull));
}

}  // namespace peft
