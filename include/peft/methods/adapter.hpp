#pragma once
/// \file Bottleneck adapters (Houlsby et al. 2019, arXiv:1902.00751; Pfeiffer et al. 2020,
/// arXiv:2005.00247): h + up(act(down(h))) applied to the output h of the wrapped layer.

#include <algorithm>
#include <cstdint>
#include <cmath>
#include <optional>
#include <string>
#include <string_view>

#include "peft/core/groups.hpp"
#include "peft/core/layer.hpp"
#include "peft/core/method_config.hpp"
#include "peft/core/random.hpp"
#include "peft/core/roles.hpp"
#include "peft/layers/activation.hpp"
#include "peft/layers/linear.hpp"
#include "peft/methods/wrapper.hpp"

namespace peft {

/// Bottleneck adapter (Houlsby et al. 2019): `h + up(act(down(h)))`. The bottleneck is `bottleneck`
/// when non-zero, else `max(1, width / reduction_factor)` (AdapterHub's convention; Pfeiffer uses 16);
/// it must not exceed the layer's width.
/// `enabled` and `target_modules` (a regular expression matched in full; empty = every module the
/// plan's roles reach) choose at run time where adapters go, e.g. Pfeiffer's placement inside a plan
/// compiled with Houlsby's roles.
struct adapter_config {
  std::size_t bottleneck = 0;
  double reduction_factor = 16;
  activation nonlinearity = activation::relu;
  bool enabled = true;
  std::string target_modules{};
};

namespace groups {
/// The parameters of bottleneck adapters.
struct adapter {
  static constexpr std::string_view name = "adapter";
  static constexpr bool method_group = true;
};
}  // namespace groups

}  // namespace peft

namespace peft::methods {

/// Bottleneck width for a layer of `width` outputs (see `adapter_config`).
inline std::size_t adapter_bottleneck(const adapter_config& c, std::size_t width, const std::string& name) {
  if (c.bottleneck == 0 && !(c.reduction_factor >= 1))
    throw config_error(peft::detail::concat("adapter on '", name, "': reduction_factor = ", c.reduction_factor,
                                            " must be >= 1"));
  const std::size_t b = c.bottleneck ? c.bottleneck : std::max<std::size_t>(1, std::size_t(double(width) / c.reduction_factor));
  // A bottleneck wider than the layer is no bottleneck; checked before anything is allocated.
  if (b > width)
    throw config_error(peft::detail::concat("adapter on '", name, "': bottleneck ", b, " exceeds the layer's width ", width,
                                            " (a bottleneck adapter projects down)"));
  return b;
}

/// A layer (`Inner`) followed by a residual bottleneck adapter. Parameters (group `adapter`, always
/// trainable): `adapter.down.weight` (m x d), `adapter.down.bias`, `adapter.up.weight` (d x m),
/// `adapter.up.bias`. The up-projection starts at zero, so the adapter starts as the identity.
/// Not mergeable itself (it is nonlinear); `merge` reaches the layers it wraps.
template <class Inner>
class bottleneck_adapter : public linear_wrapper<Inner>, public visits_parameters<bottleneck_adapter<Inner>> {
  friend visits_parameters<bottleneck_adapter>;
  using linear_wrapper<Inner>::inner_;

 public:
  using backend = typename Inner::backend;
  using B = backend;
  using tensor = typename B::tensor;
  using value_type = typename B::value_type;
  using projection = layers::linear<B, group_set<groups::adapter>, groups::adapter, groups::adapter>;

  bottleneck_adapter(typename B::context& ctx, const layers::linear_options& o, const method_config& cfg)
      : linear_wrapper<Inner>(ctx, o, cfg), act_(cfg.get<adapter_config>().nonlinearity) {
    const adapter_config& c = cfg.get<adapter_config>();
    if (!selects(c, o.name)) return;  // left out at run time: the layer passes through
    down_.emplace(ctx, layers::linear_options{.in_features = o.out_features,
                                              .out_features = adapter_bottleneck(c, o.out_features, o.name),
                                              .bias = true,
                                              .name = o.name + ".adapter.down",
                                              .seed = derive_seed(o.seed, 0xADA),
                                              .init = layers::weight_init::kaiming_uniform});
    up_.emplace(ctx, layers::linear_options{.in_features = down_->out_features(),
                                            .out_features = o.out_features,
                                            .bias = true,
                                            .name = o.name + ".adapter.up",
                                            .seed = derive_seed(o.seed, 0xADB),
                                            .init = layers::weight_init::zeros});
  }

  const tensor& forward(typename B::context& ctx, const tensor& x) {
    const tensor& h = inner_.forward(ctx, x);
    if (!active()) return h;
    const tensor& a = up_->forward(ctx, act_.forward(ctx, down_->forward(ctx, h)));
    B::copy(ctx, h, y_);
    B::axpy(ctx, value_type(1), a, y_);
    return y_;
  }
  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    if (!active()) return inner_.backward(ctx, dy);
    const tensor& dh_adapter = down_->backward(ctx, act_.backward(ctx, up_->backward(ctx, dy)));
    B::copy(ctx, dy, dh_);
    B::axpy(ctx, value_type(1), dh_adapter, dh_);
    return inner_.backward(ctx, dh_);
  }

  void merge(typename B::context& ctx) { merge_if_possible(inner_, ctx); }
  void unmerge(typename B::context& ctx) { unmerge_if_possible(inner_, ctx); }
  [[nodiscard]] bool merged() const noexcept {
    if constexpr (Mergeable<Inner>) return inner_.merged();
    else return false;
  }

  /// Activation elements kept for a step: the inner layer's, then down, activation, up, the sum and
  /// the input gradient.
  static std::uint64_t activation_elements(const layers::linear_site& s) {
    if (!selects(s.cfg.get<adapter_config>(), s.name)) return Inner::activation_elements(s);
    const std::uint64_t m = adapter_bottleneck(s.cfg.get<adapter_config>(), s.out, s.name), rows = s.rows;
    return Inner::activation_elements(s) + rows * (s.out + m) + 2 * rows * m + rows * (m + s.out) + 2 * rows * s.out;
  }

  /// Whether this module carries an adapter (run-time options may leave it out).
  [[nodiscard]] bool active() const noexcept { return down_.has_value(); }
  [[nodiscard]] std::size_t bottleneck() const noexcept { return active() ? down_->out_features() : 0; }
  projection& down() { return down_.value(); }
  projection& up() { return up_.value(); }

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    self.inner_.visit_parameters(prefix, f);
    if (!self.active()) return;
    self.down_->visit_parameters(prefix + "adapter.down.", f);
    self.up_->visit_parameters(prefix + "adapter.up.", f);
  }
  static bool selects(const adapter_config& c, const std::string& name) {
    return detail::run_time_selects(c.enabled, c.target_modules, name, "adapter");
  }

  std::optional<projection> down_;
  layers::activation_layer<B> act_;
  std::optional<projection> up_;
  tensor y_, dh_;
};

/// PEFT method: a bottleneck adapter after the output of the listed roles. Stage 2: outermost, so it
/// sees the full output of the layer including LoRA and BitFit contributions.
template <roles::Role... Targets>
struct adapter {
  static_assert(sizeof...(Targets) > 0, "peft::adapter<Roles...>: name at least one role to place adapters after");
  static constexpr std::string_view name = "adapter";
  static constexpr int stage = 2;
  using options = adapter_config;
  using groups = group_set<peft::groups::adapter>;
  /// Nonlinear: it cannot be folded into the base weights.
  static constexpr bool mergeable = false;
  static constexpr std::string_view not_mergeable_because = "bottleneck adapters are nonlinear";
  template <class Role>
  static constexpr bool targets = (std::is_same_v<Role, Targets> || ...);
  template <class Role>
  using base_groups = group_set<>;
  template <class Inner>
  using wrap = bottleneck_adapter<Inner>;
};

/// Houlsby placement: adapters after the attention output and after the FFN output, before each
/// residual layer norm.
using houlsby_adapter = adapter<roles::attention_output, roles::ffn_out>;
/// Pfeiffer placement: one adapter after the FFN output.
using pfeiffer_adapter = adapter<roles::ffn_out>;

}  // namespace peft::methods
