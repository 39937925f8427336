#pragma once
/// \file `peft::layers::layer_norm`: normalisation over the last dimension with scale and shift.

#include <string>

#include "peft/core/error.hpp"
#include "peft/core/groups.hpp"
#include "peft/core/layer.hpp"
#include "peft/layers/linear.hpp"

namespace peft::layers {

/// y = gamma * (x - mean) / sqrt(var + eps) + beta (+ delta), statistics per row of the last
/// dimension. Parameters (HF names): `weight` (gamma, starts at 1) and `bias` (beta, starts at 0), both
/// in group `norm`, trainable when `Trainable` contains it; with `BiasDelta` (BitFit) a zero-initialised
/// `bias_delta` (group `bias_delta`, always trainable) adds to the output and can be merged into beta.
template <Backend B, class Trainable = group_set<>, bool BiasDelta = false>
class layer_norm : public visits_parameters<layer_norm<B, Trainable, BiasDelta>> {
  friend visits_parameters<layer_norm>;
 public:
  using backend = B;
  using tensor = typename B::tensor;
  using value_type = typename B::value_type;
  using norm_parameter = parameter<B, groups::norm, Trainable::template contains<groups::norm>>;
  using delta_parameter = parameter<B, groups::bias_delta, true>;

  layer_norm(typename B::context& ctx, std::size_t width, double eps, std::string name = "LayerNorm")
      : eps_(eps), name_(std::move(name)) {
    if (width == 0) throw config_error(peft::detail::concat("layer_norm '", name_, "': width must be positive"));
    if (!(eps > 0)) throw config_error(peft::detail::concat("layer_norm '", name_, "': eps = ", eps, " must be positive"));
    detail::init_tensor<B>(ctx, shape{width}, gamma_.value, [] { return 1.0; });
    detail::init_tensor<B>(ctx, shape{width}, beta_.value, [] { return 0.0; });
    gamma_.allocate_grad(ctx);
    beta_.allocate_grad(ctx);
    if constexpr (BiasDelta) {
      detail::init_tensor<B>(ctx, shape{width}, delta_.value, [] { return 0.0; });
      delta_.allocate_grad(ctx);
    }
  }

  const tensor& forward(typename B::context& ctx, const tensor& x) {
    if (x.cols() != width())
      throw shape_error(peft::detail::concat("layer_norm '", name_, "': input shape ", x.shape(), " does not end in ", width()));
    input_ = &x;
    B::layer_norm_forward(ctx, x, gamma_.value, beta_.value, value_type(eps_), y_, mean_, rstd_);
    if constexpr (BiasDelta)
      if (!merged_) B::add_row_vector(ctx, y_, delta_.value);
    return y_;
  }
  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    if (!input_) throw error(peft::detail::concat("layer_norm '", name_, "': backward called before forward"));
    tensor* dgamma = nullptr;
    tensor* dbeta = nullptr;
    if constexpr (norm_parameter::trainable) {
      dgamma = &gamma_.grad;
      dbeta = &beta_.grad;
    }
    if constexpr (BiasDelta) {
      if (merged_) throw error(peft::detail::concat("layer_norm '", name_, "': backward through a merged bias delta"));
      B::sum_rows(ctx, dy, value_type(1), delta_.grad);
    }
    B::layer_norm_backward(ctx, *input_, gamma_.value, mean_, rstd_, dy, dx_, dgamma, dbeta);
    return dx_;
  }


  /// beta += delta (BitFit); a no-op without a delta.
  void merge(typename B::context& ctx) {
    if constexpr (BiasDelta) {
      if (merged_) throw error(peft::detail::concat("layer_norm '", name_, "': already merged"));
      B::axpy(ctx, value_type(1), delta_.value, beta_.value);
      merged_ = true;
    }
  }
  void unmerge(typename B::context& ctx) {
    if constexpr (BiasDelta) {
      if (!merged_) throw error(peft::detail::concat("layer_norm '", name_, "': unmerge without merge"));
      B::axpy(ctx, value_type(-1), delta_.value, beta_.value);
      merged_ = false;
    }
  }
  [[nodiscard]] bool merged() const noexcept { return merged_; }

  [[nodiscard]] std::size_t width() const noexcept { return gamma_.value.size(); }
  [[nodiscard]] double eps() const noexcept { return eps_; }
  norm_parameter& weight() noexcept { return gamma_; }
  norm_parameter& bias() noexcept { return beta_; }

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    f(prefix + "weight", self.gamma_);
    f(prefix + "bias", self.beta_);
    if constexpr (BiasDelta) f(prefix + "bias_delta", self.delta_);
  }

  double eps_;
  std::string name_;
  norm_parameter gamma_, beta_;
  [[no_unique_address]] std::conditional_t<BiasDelta, delta_parameter, peft::detail::no_gradient> delta_{};
  bool merged_ = false;
  const tensor* input_ = nullptr;
  tensor y_, dx_, mean_, rstd_;
};

}  // namespace peft::layers
