#pragma once
// Deterministic inputs and parameters for tests, for any backend (drawn on the host, then uploaded).

#include <cstdint>
#include <string>

#include "peft/core/layer.hpp"
#include "peft/core/random.hpp"
#include "peft/layers/linear.hpp"

namespace peft::test {

/// A host tensor of shape `s` filled with U(-scale, scale) from `seed`.
template <class B>
typename B::tensor random_tensor(typename B::context& ctx, const shape& s, std::uint64_t seed, double scale = 1.0) {
  typename B::tensor t;
  layers::detail::init_tensor<B>(ctx, s, t, [rng = init_rng(seed), scale]() mutable { return rng.uniform(-scale, scale); });
  return t;
}

/// Sets every parameter of `l` (trainable or not) to U(-scale, scale), so checks do not run at a
/// special point such as LoRA's B = 0 or an adapter's zero up-projection.
template <class L>
void randomize_parameters(typename L::backend::context& ctx, L& l, std::uint64_t seed, double scale = 0.5) {
  std::uint64_t k = 0;
  l.visit_parameters("", [&](const std::string&, auto& p) {
    p.value = random_tensor<typename L::backend>(ctx, p.value.shape(), derive_seed(seed, k++), scale);
  });
}

}  // namespace peft::test
