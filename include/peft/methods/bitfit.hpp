#pragma once
/// \file BitFit (Ben Zaken et al. 2021, arXiv:2106.10199): train only the biases.
///
/// Rather than unfreezing the base biases in place, each targeted layer gets a separate,
/// zero-initialised bias delta: y = inner(x) + delta. The base model stays intact; `merge` folds the
/// delta into the base bias and `unmerge` takes it out again. Linear layers and layer norms both get
/// one (the norm's bias is its shift, beta).

#include <cstdint>
#include <string>
#include <string_view>

#include "peft/core/error.hpp"
#include "peft/core/groups.hpp"
#include "peft/core/layer.hpp"
#include "peft/core/method_config.hpp"
#include "peft/core/roles.hpp"
#include "peft/layers/linear.hpp"
#include "peft/methods/wrapper.hpp"

namespace peft {

/// BitFit's run-time options: `enabled` switches it off without changing the plan (a tool compiled
/// with BitFit in its plan then trains without it), and `target_modules` (empty = every module the
/// plan targets) is a regular expression a module name must match in full.
struct bitfit_config {
  bool enabled = true;
  std::string target_modules{};
};

namespace groups {
/// BitFit's bias deltas.
struct bias_delta {
  static constexpr std::string_view name = "bias_delta";
  static constexpr bool method_group = true;
};
}  // namespace groups

}  // namespace peft

namespace peft::methods {

namespace detail {
/// Whether BitFit applies to module `name` under `c`.
inline bool bitfit_selects(const bitfit_config& c, const std::string& name) {
  return run_time_selects(c.enabled, c.target_modules, name, "bitfit");
}

/// The bias delta itself, shared by the linear and the norm wrappers: a zero-initialised trainable
/// vector added to the wrapped layer's output, mergeable into its bias. Inactive (no parameter) when
/// the layer has no bias or BitFit does not select it.
template <Backend B>
class bias_delta_state {
 public:
  using tensor = typename B::tensor;
  using value_type = typename B::value_type;
  using delta_parameter = parameter<B, groups::bias_delta, true>;

  bias_delta_state(typename B::context& ctx, std::size_t width, bool active, std::string name) : name_(std::move(name)) {
    if (!active) return;
    delta_.value.resize(shape{width});
    B::fill(ctx, delta_.value, value_type(0));
    delta_.allocate_grad(ctx);
  }
  const tensor& forward(typename B::context& ctx, const tensor& base) {
    if (merged_ || !active()) return base;
    B::copy(ctx, base, y_);
    B::add_row_vector(ctx, y_, delta_.value);
    return y_;
  }
  void backward(typename B::context& ctx, const tensor& dy) {
    if (!active()) return;
    if (merged_) throw error(peft::detail::concat("bitfit on '", name_, "': backward through a merged layer"));
    B::sum_rows(ctx, dy, value_type(1), delta_.grad);
  }
  /// bias += delta.
  void merge(typename B::context& ctx, tensor& bias) {
    if (merged_) throw error(peft::detail::concat("bitfit on '", name_, "': already merged"));
    if (active()) B::axpy(ctx, value_type(1), delta_.value, bias);
    merged_ = true;
  }
  /// bias -= delta.
  void unmerge(typename B::context& ctx, tensor& bias) {
    if (!merged_) throw error(peft::detail::concat("bitfit on '", name_, "': unmerge without merge"));
    if (active()) B::axpy(ctx, value_type(-1), delta_.value, bias);
    merged_ = false;
  }
  template <class F>
  void visit(const std::string& prefix, F& f) {
    if (active()) f(prefix + "bias_delta", delta_);
  }
  template <class F>
  void visit(const std::string& prefix, F& f) const {
    if (active()) f(prefix + "bias_delta", delta_);
  }
  [[nodiscard]] bool active() const noexcept { return !delta_.value.empty(); }
  [[nodiscard]] bool merged() const noexcept { return merged_; }
  delta_parameter& delta() noexcept { return delta_; }

 private:
  std::string name_;
  delta_parameter delta_;
  bool merged_ = false;
  tensor y_;
};
}  // namespace detail

/// A linear layer (`Inner`) with a trainable bias delta (`bias_delta`, group `bias_delta`). On a layer
/// built without a bias, or one BitFit's options leave out, the wrapper is inert and has no parameter.
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

  bitfit_linear(typename B::context& ctx, const layers::linear_options& o, const method_config& cfg)
      : linear_wrapper<Inner>(ctx, o, cfg),
        delta_(ctx, o.out_features, o.bias && detail::bitfit_selects(cfg.get<bitfit_config>(), o.name), o.name) {}

  const tensor& forward(typename B::context& ctx, const tensor& x) { return delta_.forward(ctx, inner_.forward(ctx, x)); }
  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    delta_.backward(ctx, dy);
    return inner_.backward(ctx, dy);
  }

  /// base bias += delta.
  void merge(typename B::context& ctx) {
    merge_if_possible(inner_, ctx);
    delta_.merge(ctx, base_linear().bias().value);
  }
  /// base bias -= delta.
  void unmerge(typename B::context& ctx) {
    delta_.unmerge(ctx, base_linear().bias().value);
    unmerge_if_possible(inner_, ctx);
  }
  [[nodiscard]] bool merged() const noexcept { return delta_.merged(); }
  typename detail::bias_delta_state<B>::delta_parameter& bias_delta() noexcept { return delta_.delta(); }

  /// Activation elements kept for a step of `s.rows` rows: the inner layer's, plus the output copy.
  static std::uint64_t activation_elements(const layers::linear_site& s) {
    return Inner::activation_elements(s) +
           (s.bias && detail::bitfit_selects(s.cfg.get<bitfit_config>(), s.name) ? std::uint64_t(s.rows) * s.out : 0);
  }

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    self.inner_.visit_parameters(prefix, f);
    self.delta_.visit(prefix, f);
  }

  detail::bias_delta_state<B> delta_;
};

/// A layer norm (`Inner`) with a trainable delta on its shift: y = norm(x) + delta, mergeable into
/// the norm's bias. Parameter: `bias_delta` next to the norm's `weight` and `bias`.
template <class Inner>
class bitfit_norm : public visits_parameters<bitfit_norm<Inner>> {
  friend visits_parameters<bitfit_norm>;

 public:
  using backend = typename Inner::backend;
  using B = backend;
  using tensor = typename B::tensor;

  bitfit_norm(typename B::context& ctx, std::size_t width, double eps, std::string name, const method_config& cfg)
      : inner_(ctx, width, eps, name, cfg), delta_(ctx, width, detail::bitfit_selects(cfg.get<bitfit_config>(), name), name) {}

  const tensor& forward(typename B::context& ctx, const tensor& x) { return delta_.forward(ctx, inner_.forward(ctx, x)); }
  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    delta_.backward(ctx, dy);
    return inner_.backward(ctx, dy);
  }
  void merge(typename B::context& ctx) {
    merge_if_possible(inner_, ctx);
    delta_.merge(ctx, inner_.bias().value);
  }
  void unmerge(typename B::context& ctx) {
    delta_.unmerge(ctx, inner_.bias().value);
    unmerge_if_possible(inner_, ctx);
  }
  [[nodiscard]] bool merged() const noexcept { return delta_.merged(); }
  /// Activation elements kept for a step: the norm's, plus the output copy.
  static std::uint64_t activation_elements(std::uint64_t rows, std::uint64_t width, const std::string& name,
                                           const method_config& cfg) {
    return Inner::activation_elements(rows, width, name, cfg) +
           (detail::bitfit_selects(cfg.get<bitfit_config>(), name) ? rows * width : 0);
  }
  static std::uint64_t backward_elements(std::uint64_t rows, std::uint64_t width, const std::string& name,
                                         const method_config& cfg) {
    return layers::norm_backward_elements_of<Inner>(rows, width, name, cfg);
  }
  auto& bias() noexcept { return inner_.bias(); }
  auto& weight() noexcept { return inner_.weight(); }
  [[nodiscard]] std::size_t width() const noexcept { return inner_.width(); }
  [[nodiscard]] const std::string& name() const noexcept { return inner_.name(); }
  Inner& inner() noexcept { return inner_; }

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    self.inner_.visit_parameters(prefix, f);
    self.delta_.visit(prefix, f);
  }

  Inner inner_;
  detail::bias_delta_state<B> delta_;
};

/// PEFT method: BitFit on every linear layer except the classifier (which trains fully anyway), and
/// on every layer norm's shift (`wrap_norm`). Stage 1: wraps LoRA, so a LoRA + BitFit layer merges
/// both into the same base linear. Not a Hugging Face PEFT type: adapters carrying bias deltas are
/// written in this library's extension of PEFT's layout (docs/formats.md).
struct bitfit {
  static constexpr std::string_view name = "bitfit";
  static constexpr int stage = 1;
  using options = bitfit_config;
  using groups = group_set<peft::groups::bias_delta>;
  template <class Role>
  static constexpr bool targets = !std::is_same_v<Role, roles::classifier>;
  template <class Role>
  using base_groups = group_set<>;
  template <class Inner>
  using wrap = bitfit_linear<Inner>;
  template <class Inner>
  using wrap_norm = bitfit_norm<Inner>;
};

}  // namespace peft::methods
