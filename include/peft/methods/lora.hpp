#pragma once
/// \file LoRA (Hu et al. 2021, arXiv:2106.09685) and rsLoRA (Kalajdzievski 2023, arXiv:2312.03732).
///
/// y = W x + b + s * B (A dropout(x)), A (r x in) kaiming-uniform (a = sqrt(5)), B (out x r) zeros,
/// s = alpha / r (or alpha / sqrt(r) with rsLoRA) -- Hugging Face PEFT's `LoraLayer` defaults.

#include <algorithm>
#include <cmath>
#include <optional>
#include <regex>
#include <string>

#include "peft/core/error.hpp"
#include "peft/core/groups.hpp"
#include "peft/core/layer.hpp"
#include "peft/core/method_config.hpp"
#include "peft/core/random.hpp"
#include "peft/core/roles.hpp"
#include "peft/layers/dropout.hpp"
#include "peft/layers/linear.hpp"
#include "peft/methods/wrapper.hpp"

namespace peft::methods {

namespace detail {
/// Index i of the first `layer.<i>.` segment of a module name (PEFT's `layers_pattern`), or -1.
inline int layer_index(const std::string& name) {
  static const std::regex pattern(R"((?:^|.*\.)layer\.(\d+)\.)");
  std::smatch m;
  return std::regex_search(name, m, pattern) ? std::stoi(m[1].str()) : -1;
}
/// Whether `name` matches PEFT's pattern key `key`: `(.*\.)?key` in full.
inline bool matches_pattern_key(const std::string& name, const std::string& key) {
  try {
    return std::regex_match(name, std::regex("(.*\\.)?(" + key + ")"));
  } catch (const std::regex_error& e) {
    throw config_error(peft::detail::concat("lora: pattern key '", key, "' is not a valid regular expression: ", e.what()));
  }
}
}  // namespace detail

/// The configuration that applies to module `name`: rank and alpha after `rank_pattern` and
/// `alpha_pattern`; none when `layers_to_transform` or `target_modules` excludes the module.
inline std::optional<lora_config> lora_config_for(const lora_config& c, const std::string& name) {
  lora_config out = c;
  if (!c.target_modules.empty()) {
    try {
      if (!std::regex_match(name, std::regex(c.target_modules))) return std::nullopt;
    } catch (const std::regex_error& e) {
      throw config_error(peft::detail::concat("lora: target_modules '", c.target_modules,
                                              "' is not a valid regular expression: ", e.what()));
    }
  }
  if (!c.layers_to_transform.empty()) {
    const int index = detail::layer_index(name);
    if (std::find(c.layers_to_transform.begin(), c.layers_to_transform.end(), index) == c.layers_to_transform.end())
      return std::nullopt;
  }
  for (const auto& [key, r] : c.rank_pattern)
    if (detail::matches_pattern_key(name, key)) {
      out.r = r;
      break;
    }
  for (const auto& [key, alpha] : c.alpha_pattern)
    if (detail::matches_pattern_key(name, key)) {
      out.alpha = alpha;
      break;
    }
  return out;
}

/// Scaling factor of a LoRA update; validates the configuration for layer `name` of size in x out.
inline double lora_scaling(const lora_config& c, std::size_t in, std::size_t out, const std::string& name) {
  const std::size_t max_r = std::min(in, out);
  if (c.r == 0 || c.r > max_r)
    throw config_error(peft::detail::concat("lora on '", name, "': rank r = ", c.r, " must be in [1, min(in_features = ",
                                            in, ", out_features = ", out, ") = ", max_r, "]"));
  if (!(c.alpha > 0) || !std::isfinite(c.alpha))
    throw config_error(peft::detail::concat("lora on '", name, "': lora_alpha = ", c.alpha, " must be positive"));
  if (!(c.dropout >= 0 && c.dropout < 1))
    throw config_error(peft::detail::concat("lora on '", name, "': lora_dropout = ", c.dropout, " is outside [0, 1)"));
  return c.use_rslora ? c.alpha / std::sqrt(double(c.r)) : c.alpha / double(c.r);
}

/// A linear layer (`Inner`, which must expose `base_linear()`) with a LoRA update. Parameters:
/// the inner ones, then `lora_A.weight` (r x in) and `lora_B.weight` (out x r), both always trainable
/// (groups `lora_a`, `lora_b`). Mergeable: `merge` adds s * B A to the base weight.
template <class Inner>
class lora_linear : public linear_wrapper<Inner>, public visits_parameters<lora_linear<Inner>> {
  friend visits_parameters<lora_linear>;
  using linear_wrapper<Inner>::inner_;

 public:
  using backend = typename Inner::backend;
  using B = backend;
  using linear_wrapper<Inner>::name;
  using linear_wrapper<Inner>::base_linear;
  using tensor = typename B::tensor;
  using value_type = typename B::value_type;
  using a_layer = layers::linear<B, group_set<groups::lora_a>, groups::lora_a, groups::lora_a>;
  using b_layer = layers::linear<B, group_set<groups::lora_b>, groups::lora_b, groups::lora_b>;

  lora_linear(typename B::context& ctx, const layers::linear_options& o, const method_config& cfg)
      : lora_linear(ctx, o, cfg, lora_config_for(cfg.lora, o.name)) {}

  const tensor& forward(typename B::context& ctx, const tensor& x) {
    const tensor& base = inner_.forward(ctx, x);
    if (merged_ || !active()) return base;
    const tensor& l = b_->forward(ctx, a_->forward(ctx, dropout_.forward(ctx, x)));
    B::copy(ctx, base, y_);
    B::axpy(ctx, value_type(scaling_), l, y_);
    return y_;
  }
  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    if (!active()) return inner_.backward(ctx, dy);
    if (merged_)
      throw error(peft::detail::concat("lora on '", name(), "': backward through a merged layer; unmerge before training"));
    B::copy(ctx, dy, scaled_dy_);
    B::scale(ctx, value_type(scaling_), scaled_dy_);
    const tensor& dx_lora = dropout_.backward(ctx, a_->backward(ctx, b_->backward(ctx, scaled_dy_)));
    B::copy(ctx, inner_.backward(ctx, dy), dx_);
    B::axpy(ctx, value_type(1), dx_lora, dx_);
    return dx_;
  }


  /// W += s * B A; the LoRA path is then skipped. Merging twice is an error (it would double-count).
  void merge(typename B::context& ctx) {
    merge_if_possible(inner_, ctx);
    if (merged_) throw error(peft::detail::concat("lora on '", name(), "': already merged"));
    if (active())
      B::gemm(ctx, op::n, op::n, value_type(scaling_), b_->weight().value, a_->weight().value, value_type(1),
            base_linear().weight().value);
    merged_ = true;
  }
  /// W -= s * B A, restoring the base weight up to rounding.
  void unmerge(typename B::context& ctx) {
    if (!merged_) throw error(peft::detail::concat("lora on '", name(), "': unmerge without merge"));
    if (active())
      B::gemm(ctx, op::n, op::n, value_type(-scaling_), b_->weight().value, a_->weight().value, value_type(1),
            base_linear().weight().value);
    merged_ = false;
    unmerge_if_possible(inner_, ctx);
  }
  [[nodiscard]] bool merged() const noexcept { return merged_; }

  [[nodiscard]] double scaling() const noexcept { return scaling_; }
  /// The rank of this module (after rank_pattern); 0 when layers_to_transform leaves it out.
  [[nodiscard]] std::size_t rank() const noexcept { return a_ ? a_->out_features() : 0; }
  /// Whether this module carries a LoRA update (layers_to_transform may leave it out).
  [[nodiscard]] bool active() const noexcept { return a_.has_value(); }
  a_layer& lora_A() { return a_.value(); }
  b_layer& lora_B() { return b_.value(); }

 private:
  lora_linear(typename B::context& ctx, const layers::linear_options& o, const method_config& cfg,
              const std::optional<lora_config>& selected)
      : linear_wrapper<Inner>(ctx, o, cfg),
        scaling_(selected ? lora_scaling(*selected, o.in_features, o.out_features, o.name) : 0.0),
        dropout_(selected ? selected->dropout : 0.0, o.name + ".lora_dropout") {
    if (!selected) return;  // left out by layers_to_transform or target_modules
    const lora_config& own = *selected;
    a_.emplace(ctx, layers::linear_options{.in_features = o.in_features, .out_features = own.r, .bias = false,
                                           .name = o.name + ".lora_A", .seed = derive_seed(o.seed, 0x10A),
                                           .init = layers::weight_init::kaiming_uniform});
    b_.emplace(ctx, layers::linear_options{.in_features = own.r, .out_features = o.out_features, .bias = false,
                                           .name = o.name + ".lora_B", .seed = derive_seed(o.seed, 0x10B),
                                           .init = layers::weight_init::zeros});
  }

  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    self.inner_.visit_parameters(prefix, f);
    if (!self.a_) return;
    self.a_->visit_parameters(prefix + "lora_A.", f);
    self.b_->visit_parameters(prefix + "lora_B.", f);
  }

  double scaling_;
  layers::dropout<B> dropout_;
  std::optional<a_layer> a_;
  std::optional<b_layer> b_;
  bool merged_ = false;
  tensor y_, scaled_dy_, dx_;
};

/// PEFT method: LoRA on the linear layers of the listed roles (at least one). Stage 0: innermost, so
/// it sees the plain base weight whatever else the plan adds.
template <roles::Role... Targets>
struct lora {
  static_assert(sizeof...(Targets) > 0, "peft::lora<Roles...>: name at least one role, e.g. lora<roles::query, roles::value>");
  static constexpr std::string_view name = "lora";
  static constexpr int stage = 0;
  template <class Role>
  static constexpr bool targets = (std::is_same_v<Role, Targets> || ...);
  template <class Role>
  using base_groups = group_set<>;
  template <class Inner>
  using wrap = lora_linear<Inner>;
};

}  // namespace peft::methods
