#pragma once
/// \file Mean squared error.

#include <cmath>

#include "peft/core/backend.hpp"
#include "peft/core/error.hpp"

namespace peft::loss {

/// mean((pred - target)^2) over all elements; shapes must match exactly (no broadcasting).
template <Backend B>
class mse {
 public:
  using tensor = typename B::tensor;

  double forward(typename B::context& ctx, const tensor& pred, const tensor& target) {
    if (!(pred.shape() == target.shape()))
      throw shape_error(peft::detail::concat("mse: prediction shape ", pred.shape(), " differs from target shape ",
                                             target.shape()));
    const double loss = B::mse(ctx, pred, target, grad_);
    if (!std::isfinite(loss))
      throw numeric_error(peft::detail::concat("mse: loss is not finite (", loss, ") for shape ", pred.shape()));
    return loss;
  }
  [[nodiscard]] const tensor& gradient() const noexcept { return grad_; }

 private:
  tensor grad_;
};

}  // namespace peft::loss
