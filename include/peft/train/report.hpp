#pragma once
/// \file Parameter counts and the trainable-parameter report in Hugging Face PEFT's words.

#include <cstdint>
#include <iostream>
#include <string>

#include "peft/core/layer.hpp"

namespace peft {

/// Element counts of a model's parameters.
struct parameter_counts {
  std::uint64_t trainable = 0;
  std::uint64_t total = 0;
  std::uint64_t tensors = 0;
  std::uint64_t trainable_tensors = 0;
};

/// Counts the parameters of any `Layer`. Frozen method parameters (VeRA's slices of its shared
/// random matrices, redrawn from a seed) are not counted, as PEFT keeps them as buffers, not
/// parameters, so that the trainable share compares with PEFT's `print_trainable_parameters`.
template <class Model>
parameter_counts count_parameters(const Model& m) {
  parameter_counts c;
  m.visit_parameters("", [&](const std::string&, const auto& p) {
    using P = std::remove_cvref_t<decltype(p)>;
    if constexpr (groups::MethodGroup<typename P::group> && !P::trainable) return;
    c.total += p.stored_elements();
    ++c.tensors;
    if constexpr (std::remove_cvref_t<decltype(p)>::trainable) {
      c.trainable += p.stored_elements();
      ++c.trainable_tensors;
    }
  });
  return c;
}

namespace detail {
inline std::string thousands(std::uint64_t v) {
  std::string s = std::to_string(v);
  for (int i = int(s.size()) - 3; i > 0; i -= 3) s.insert(std::size_t(i), ",");
  return s;
}
}  // namespace detail

/// `trainable params: N || all params: M || trainable%: x` exactly as PEFT's
/// `print_trainable_parameters` formats it (thousands separators, four decimals).
template <class Model>
std::string trainable_parameters_report(const Model& m) {
  const auto c = count_parameters(m);
  char pct[32];
  std::snprintf(pct, sizeof pct, "%.4f", c.total ? 100.0 * double(c.trainable) / double(c.total) : 0.0);
  return "trainable params: " + detail::thousands(c.trainable) + " || all params: " + detail::thousands(c.total) +
         " || trainable%: " + pct;
}

/// Prints `trainable_parameters_report(m)` and a newline.
template <class Model>
void print_trainable_parameters(const Model& m, std::ostream& os = std::cout) {
  os << trainable_parameters_report(m) << '\n';
}

}  // namespace peft
