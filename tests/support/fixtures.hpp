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
    const bool unset = p.value.empty() && !p.is_packed();  // a value set at first use (DoRA's magnitude)
    p.value = random_tensor<typename L::backend>(ctx, unset ? p.stored_shape() : p.value.shape(), derive_seed(seed, k++), scale);
  });
}

/// Sets every trainable parameter of `l` to U(-scale, scale) and leaves the frozen ones as they are
/// (a trained adapter over an unchanged base model, for save-and-load round trips).
template <class L>
void randomize_trainable(typename L::backend::context& ctx, L& l, std::uint64_t seed, double scale = 0.5) {
  std::uint64_t k = 0;
  l.visit_parameters("", [&](const std::string&, auto& p) {
    if constexpr (std::remove_cvref_t<decltype(p)>::trainable)
      p.value = random_tensor<typename L::backend>(ctx, p.stored_shape(), derive_seed(seed, k++), scale);
  });
}

/// The largest |a[i] - b[i]| of two host tensors or vectors of equal size; infinity when the sizes
/// differ or either holds a NaN (so a comparison of two NaN results cannot pass).
template <class Tn>
double max_abs_diff(const Tn& a, const Tn& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(double(a.data()[i]) - double(b.data()[i]));
    if (std::isnan(d)) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, d);
  }
  return worst;
}

}  // namespace peft::test
