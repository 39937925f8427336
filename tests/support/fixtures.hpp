#pragma once
// Deterministic inputs and parameters for tests, for any backend (drawn on the host, then uploaded).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
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

/// The largest |a[i] - b[i]| of two host tensors of equal size (infinity when the sizes differ).
template <class Tn>
double max_abs_diff(const Tn& a, const Tn& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(double(a.data()[i]) - double(b.data()[i])));
  return worst;
}

}  // namespace peft::test
