#pragma once
/// \file `peft::layers::dropout`: inverted dropout, active only when `ctx.training` is set.

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

  explicit dropout(double p = 0.0, std::string name = "dropout") : p_(p), name_(std::move(name)) {
    if (!(p >= 0.0 && p < 1.0))
      throw config_error(peft::detail::concat("dropout '", name_, "': probability ", p, " is outside [0, 1)"));
  }

  const tensor& forward(typename B::context& ctx, const tensor& x) {
    active_ = ctx.training && p_ > 0;
    if (!active_) return x;
    mask_.resize(x.shape());
    B::dropout_mask(ctx, typename B::value_type(p_), ctx.seed, ctx.take_random(x.size(), x.shape().rank() ? x.shape()[0] : 0), mask_);
    B::multiply(ctx, x, mask_, y_);
    return y_;
  }
  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    if (!active_) return dy;
    tensor& dx = backward_buffer<B>(ctx, dx_);
    B::multiply(ctx, dy, mask_, dx);
    return dx;
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
  tensor mask_, y_, dx_;
};

}  // namespace peft::layers
