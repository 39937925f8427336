#pragma once
/// \file `peft::layers::rms_norm`: root-mean-square normalisation over the last dimension with a
/// learned scale (Zhang & Sennrich 2019, arXiv:1910.07467), as Llama-family models use it.

#include <string>

#include "peft/core/error.hpp"
#include "peft/core/groups.hpp"
#include "peft/core/layer.hpp"
#include "peft/core/method_config.hpp"
#include "peft/layers/linear.hpp"

namespace peft::layers {

/// y = gamma * x / sqrt(mean(x^2) + eps), per row of the last dimension. Parameter (HF name):
/// `weight` (gamma, starts at 1), group `norm`, trainable when `Trainable` contains it. No bias, so
/// BitFit has nothing to add here.
template <Backend B, class Trainable = group_set<>>
class rms_norm : public visits_parameters<rms_norm<B, Trainable>> {
  friend visits_parameters<rms_norm>;

 public:
  using backend = B;
  using tensor = typename B::tensor;
  using value_type = typename B::value_type;
  using norm_parameter = parameter<B, groups::norm, Trainable::template contains<groups::norm>>;

  rms_norm(typename B::context& ctx, std::size_t width, double eps, std::string name = "norm")
      : eps_(eps), name_(std::move(name)) {
    if (width == 0) throw config_error(peft::detail::concat("rms_norm '", name_, "': width must be positive"));
    if (!(eps > 0)) throw config_error(peft::detail::concat("rms_norm '", name_, "': eps = ", eps, " must be positive"));
    detail::init_tensor<B>(ctx, shape{width}, gamma_.value, [] { return 1.0; });
    gamma_.allocate_grad(ctx);
  }

  /// Constructor used by plans: a plain norm ignores the method configuration.
  rms_norm(typename B::context& ctx, std::size_t width, double eps, std::string name, const method_config&)
      : rms_norm(ctx, width, eps, std::move(name)) {}

  const tensor& forward(typename B::context& ctx, const tensor& x) {
    if (x.cols() != width())
      throw shape_error(peft::detail::concat("rms_norm '", name_, "': input shape ", x.shape(), " does not end in ", width()));
    input_ = &x;
    B::rms_norm_forward(ctx, x, gamma_.value, value_type(eps_), y_, rstd_);
    return y_;
  }
  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    if (!input_) throw error(peft::detail::concat("rms_norm '", name_, "': backward called before forward"));
    tensor* dgamma = nullptr;
    if constexpr (norm_parameter::trainable) dgamma = &gamma_.grad;
    tensor& dx = block_buffer<B>(ctx, dx_);
    B::rms_norm_backward(ctx, *input_, gamma_.value, rstd_, dy, dx, dgamma);
    return dx;
  }

  [[nodiscard]] std::size_t width() const noexcept { return gamma_.value.size(); }
  [[nodiscard]] double eps() const noexcept { return eps_; }
  norm_parameter& weight() noexcept { return gamma_; }

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    f(prefix + "weight", self.gamma_);
  }

  double eps_;
  std::string name_;
  norm_parameter gamma_;
  const tensor* input_ = nullptr;
  tensor y_, dx_, rstd_;
};

}  // namespace peft::layers
