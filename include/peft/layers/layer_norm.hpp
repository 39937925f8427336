#pragma once
/// \file `peft::layers::layer_norm`: normalisation over the last dimension with scale and shift.

#include <cstdint>
#include <string>

#include "peft/core/error.hpp"
#include "peft/core/groups.hpp"
#include "peft/core/layer.hpp"
#include "peft/core/method_config.hpp"
#include "peft/layers/linear.hpp"

namespace peft::layers {

/// y = gamma * (x - mean) / sqrt(var + eps) + beta, statistics per row of the last dimension.
/// Parameters (HF names): `weight` (gamma, starts at 1) and `bias` (beta, starts at 0), both in group
/// `norm`, trainable when `Trainable` contains it. Methods that change norms wrap this layer (a plan's
/// `norm<B>`); its `bias()` is what they merge into.
template <Backend B, class Trainable = group_set<>>
class layer_norm : public visits_parameters<layer_norm<B, Trainable>> {
  friend visits_parameters<layer_norm>;
 public:
  using backend = B;
  using tensor = typename B::tensor;
  using value_type = typename B::value_type;
  using norm_parameter = parameter<B, groups::norm, Trainable::template contains<groups::norm>>;

  layer_norm(typename B::context& ctx, std::size_t width, double eps, std::string name = "LayerNorm")
      : eps_(eps), name_(std::move(name)) {
    if (width == 0) throw config_error(peft::detail::concat("layer_norm '", name_, "': width must be positive"));
    if (!(eps > 0)) throw config_error(peft::detail::concat("layer_norm '", name_, "': eps = ", eps, " must be positive"));
    detail::init_tensor<B>(ctx, shape{width}, gamma_.value, [] { return 1.0; });
    detail::init_tensor<B>(ctx, shape{width}, beta_.value, [] { return 0.0; });
    gamma_.allocate_grad(ctx);
    beta_.allocate_grad(ctx);
  }

  /// Constructor used by plans: a plain norm ignores the method configuration.
  layer_norm(typename B::context& ctx, std::size_t width, double eps, std::string name, const method_config&)
      : layer_norm(ctx, width, eps, std::move(name)) {}

  const tensor& forward(typename B::context& ctx, const tensor& x) {
    if (x.cols() != width())
      throw shape_error(peft::detail::concat("layer_norm '", name_, "': input shape ", x.shape(), " does not end in ", width()));
    input_ = &x;
    tensor& y = block_buffer<B>(ctx, y_);
    B::layer_norm_forward(ctx, x, gamma_.value, beta_.value, value_type(eps_), y, mean_, rstd_);
    return y;
  }
  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    if (!input_) throw error(peft::detail::concat("layer_norm '", name_, "': backward called before forward"));
    tensor* dgamma = nullptr;
    tensor* dbeta = nullptr;
    if constexpr (norm_parameter::trainable) {
      dgamma = &gamma_.grad;
      dbeta = &beta_.grad;
    }
    tensor& dx = block_buffer<B>(ctx, dx_);
    B::layer_norm_backward(ctx, *input_, gamma_.value, mean_, rstd_, dy, dx, dgamma, dbeta);
    return dx;
  }


  /// Activation elements kept for a step of `rows` rows: output, input gradient, mean and rstd.
  static std::uint64_t activation_elements(std::uint64_t rows, std::uint64_t width, const std::string&, const method_config&) {
    return 2 * rows * width + 2 * rows;
  }
  /// The input gradient, taken from the shared backward buffers.
  static std::uint64_t backward_elements(std::uint64_t rows, std::uint64_t width, const std::string&, const method_config&) {
    return rows * width;
  }

  [[nodiscard]] std::size_t width() const noexcept { return gamma_.value.size(); }
  [[nodiscard]] double eps() const noexcept { return eps_; }
  norm_parameter& weight() noexcept { return gamma_; }
  norm_parameter& bias() noexcept { return beta_; }
  [[nodiscard]] const std::string& name() const noexcept { return name_; }

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    f(prefix + "weight", self.gamma_);
    f(prefix + "bias", self.beta_);
  }

  double eps_;
  std::string name_;
  norm_parameter gamma_, beta_;
  const tensor* input_ = nullptr;
  tensor y_, dx_, mean_, rstd_;
};

}  // namespace peft::layers
