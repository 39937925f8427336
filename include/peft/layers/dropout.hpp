#pragma once
/// \file `peft::layers::dropout`: inverted dropout, active only when `ctx.training` is set.

#include <algorithm>
#include <cstdint>
#include <string>

#include "peft/core/error.hpp"
#include "peft/core/layer.hpp"

namespace peft::layers {

/// Zeroes each element with probability `p` and scales survivors by 1/(1-p) in training mode; the
/// identity (returning its input, no copy) in evaluation mode. Masks come from the context's
/// counter-based stream, so a seed fixes them on every backend.
template <Backend B>
class dropout {
 public:
  using backend = B;
  using tensor = typename B::tensor;
  using value_type = typename B::value_type;

  explicit dropout(double p = 0.0, std::string name = "dropout") : p_(p), name_(std::move(name)) {
    if (!(p >= 0.0 && p < 1.0))
      throw config_error(peft::detail::concat("dropout '", name_, "': probability ", p, " is outside [0, 1)"));
  }

  const tensor& forward(typename B::context& ctx, const tensor& x) {
    active_ = ctx.training && p_ > 0;
    if (!active_) return x;
    seed_ = ctx.seed;
    spacing_ = std::max<std::size_t>(ctx.dropout_row_spacing, 1);
    offset_ = ctx.take_random(x.size() * spacing_, x.shape().rank() ? x.shape()[0] : 0);
    if constexpr (FusedDropout<B>) {
      B::dropout_apply(ctx, value_type(p_), seed_, offset_, x, y_, spacing_);
    } else {
      mask_.resize(x.shape());
      B::dropout_mask(ctx, value_type(p_), seed_, offset_, mask_);
      B::multiply(ctx, x, mask_, y_);
    }
    return y_;
  }
  /// The same mask applied to dy: drawn again from the forward's seed and offset where the backend
  /// can (`FusedDropout`), read from the stored mask otherwise.
  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    if (!active_) return dy;
    tensor& dx = block_buffer<B>(ctx, dx_);
    if constexpr (FusedDropout<B>) {
      if (!(dy.shape() == y_.shape()))
        throw shape_error(peft::detail::concat("dropout '", name_, "': output gradient shape ", dy.shape(),
                                               " differs from output shape ", y_.shape()));
      B::dropout_apply(ctx, value_type(p_), seed_, offset_, dy, dx, spacing_);
    } else {
      B::multiply(ctx, dy, mask_, dx);
    }
    return dx;
  }

  /// Elements kept for a step over `n` values while active: the output, the input gradient and, on a
  /// backend without `FusedDropout`, the mask.
  static std::uint64_t activation_elements(std::uint64_t n, bool active) {
    return active ? (FusedDropout<B> ? 2 : 3) * n : 0;
  }

  template <class F>
  void visit_parameters(const std::string&, F&&) const {}

  [[nodiscard]] double probability() const noexcept { return p_; }
  /// Whether the last forward dropped anything (training mode and p > 0).
  [[nodiscard]] bool active() const noexcept { return active_; }

 private:
  double p_;
  std::string name_;
  bool active_ = false;
  std::uint64_t seed_ = 0, offset_ = 0;
  std::size_t spacing_ = 1;
  tensor mask_, y_, dx_;  // mask_: only on a backend without FusedDropout
};

}  // namespace peft::layers
