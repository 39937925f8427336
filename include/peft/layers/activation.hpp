#pragma once
/// \file `peft::layers::activation_layer`: an element-wise nonlinearity chosen at run time.

#include <string>

#include "peft/core/layer.hpp"

namespace peft::layers {

/// y = f(x) element-wise for f in {identity, relu, gelu (erf), gelu_tanh, tanh}. No parameters.
template <Backend B>
class activation_layer {
 public:
  using backend = B;
  using tensor = typename B::tensor;

  explicit activation_layer(activation kind = activation::relu) : kind_(kind) {}

  const tensor& forward(typename B::context& ctx, const tensor& x) {
    input_ = &x;
    tensor& y = block_buffer<B>(ctx, y_);  // y_ itself in training, where backward reads it
    B::activation_forward(ctx, kind_, x, y);
    return y;
  }
  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    if (!input_) throw error("activation: backward called before forward");
    tensor& dx = block_buffer<B>(ctx, dx_);
    B::activation_backward(ctx, kind_, *input_, y_, dy, dx);
    return dx;
  }
  template <class F>
  void visit_parameters(const std::string&, F&&) const {}

  [[nodiscard]] activation kind() const noexcept { return kind_; }

 private:
  activation kind_;
  const tensor* input_ = nullptr;
  tensor y_, dx_;
};

}  // namespace peft::layers
