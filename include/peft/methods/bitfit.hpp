#pragma once
/// \file BitFit (Ben Zaken et al. 2021, arXiv:2106.10199): train only the biases.
///
/// Rather than unfreezing the base biases in place, each targeted layer gets a separate,
/// zero-initialised bias delta: y = inner(x) + delta. The base model stays intact; `merge` folds the
/// delta into the base bias and `unmerge` takes it out again.

#include <string>

#include "peft/core/groups.hpp"
#include "peft/core/layer.hpp"
#include "peft/core/method_config.hpp"
#include "peft/core/roles.hpp"
#include "peft/layers/linear.hpp"
#include "peft/methods/wrapper.hpp"

namespace peft::methods {

/// A linear layer (`Inner`) with a trainable bias delta (`bias_delta`, group `bias_delta`). On a layer
/// built without a bias there is nothing to train: the wrapper is then inert and has no parameter.
template <class Inner>
class bitfit_linear : public linear_wrapper<Inner>, public visits_parameters<bitfit_linear<Inner>> {
  friend visits_parameters<bitfit_linear>;
  using linear_wrapper<Inner>::inner_;

 public:
  using backend = typename Inner::backend;
  using B = backend;
  using linear_wrapper<Inner>::name;
  using linear_wrapper<Inner>::base_linear;
  using tensor = typename B::tensor;
  using value_type = typename B::value_type;
  using delta_parameter = parameter<B, groups::bias_delta, true>;

  bitfit_linear(typename B::context& ctx, const layers::linear_options& o, const method_config& cfg)
      : linear_wrapper<Inner>(ctx, o, cfg) {
    if (o.bias) {
      delta_.value.resize(shape{o.out_features});
      B::fill(ctx, delta_.value, value_type(0));
      delta_.allocate_grad(ctx);
    }
  }

  const tensor& forward(typename B::context& ctx, const tensor& x) {
    const tensor& base = inner_.forward(ctx, x);
    if (merged_ || !active()) return base;
    B::copy(ctx, base, y_);
    B::add_row_vector(ctx, y_, delta_.value);
    return y_;
  }
  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    if (active()) {
      if (merged_) throw error(peft::detail::concat("bitfit on '", name(), "': backward through a merged layer"));
      B::sum_rows(ctx, dy, value_type(1), delta_.grad);
    }
    return inner_.backward(ctx, dy);
  }


  /// base bias += delta.
  void merge(typename B::context& ctx) {
    merge_if_possible(inner_, ctx);
    if (merged_) throw error(peft::detail::concat("bitfit on '", name(), "': already merged"));
    if (active()) B::axpy(ctx, value_type(1), delta_.value, base_linear().bias().value);
    merged_ = true;
  }
  /// base bias -= delta.
  void unmerge(typename B::context& ctx) {
    if (!merged_) throw error(peft::detail::concat("bitfit on '", name(), "': unmerge without merge"));
    if (active()) B::axpy(ctx, value_type(-1), delta_.value, base_linear().bias().value);
    merged_ = false;
    unmerge_if_possible(inner_, ctx);
  }
  [[nodiscard]] bool merged() const noexcept { return merged_; }

  delta_parameter& bias_delta() noexcept { return delta_; }

 private:
  [[nodiscard]] bool active() const noexcept { return !delta_.value.empty(); }
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    self.inner_.visit_parameters(prefix, f);
    if (self.active()) f(prefix + "bias_delta", self.delta_);
  }

  delta_parameter delta_;
  bool merged_ = false;
  tensor y_;
};

/// PEFT method: BitFit on every linear layer except the classifier (which trains fully anyway), and
/// on every layer norm's bias (through `plan::norm`).
/// Stage 1: wraps LoRA, so a LoRA + BitFit layer merges both into the same base linear.
struct bitfit {
  static constexpr std::string_view name = "bitfit";
  static constexpr int stage = 1;
  static constexpr bool adds_bias_delta = true;  ///< layer norms get a bias delta too
  template <class Role>
  static constexpr bool targets = !std::is_same_v<Role, roles::classifier>;
  template <class Role>
  using base_groups = group_set<>;
  template <class Inner>
  using wrap = bitfit_linear<Inner>;
};

}  // namespace peft::methods
