#pragma once
/// \file LayerNorm tuning (Zhao et al. 2023, arXiv:2312.11420): train the norms' scale and shift.
///
/// Hugging Face PEFT's `LN_TUNING`: every selected layer norm gets a trainable copy of its `weight`
/// (gamma) and `bias` (beta), `ln_tuning_layers.weight` / `.bias` (an RMS norm, of its `weight`
/// alone), which replaces the base norm's parameters in the forward pass; the base norm itself is
/// never written while training, so the base model can always be restored. Merging puts the tuned
/// values into the base norm.

#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "peft/core/error.hpp"
#include "peft/core/groups.hpp"
#include "peft/core/layer.hpp"
#include "peft/core/method_config.hpp"
#include "peft/core/parameter.hpp"
#include "peft/io/peft_format.hpp"
#include "peft/methods/wrapper.hpp"

namespace peft {

/// LayerNorm tuning's run-time options, as PEFT's `LNTuningConfig`. `target_modules` (a regular
/// expression over norm module names matched in full, e.g. `.*LayerNorm`; empty = every layer norm
/// of the model) picks the norms. Guarantees: a norm it leaves out has no parameter.
struct ln_tuning_config {
  bool enabled = true;  ///< false: no norm is tuned (a plan compiled with it then trains without)
  std::string target_modules{};
};

namespace groups {
/// LayerNorm tuning's copies of the norms' scale and shift.
struct ln_tuning {
  static constexpr std::string_view name = "ln_tuning";
  static constexpr bool method_group = true;
};
}  // namespace groups

}  // namespace peft

namespace peft::methods {

/// A norm (`Inner`, the plan's base layer norm or RMS norm) whose scale (and, for a layer norm,
/// shift) are trainable copies (group `ln_tuning`): `ln_tuning_layers.weight` (and
/// `ln_tuning_layers.bias`), next to the base norm's `weight` (and `bias`). The copies start empty
/// and the first forward (or merge) copies the base norm's values, so they start from the loaded
/// checkpoint, not from the norm a model is built with; values read from an adapter file are kept.
/// Mergeable: `merge` writes the tuned values into the base norm (keeping the originals), `unmerge`
/// restores them exactly.
template <class Inner>
class ln_tuning_norm : public visits_parameters<ln_tuning_norm<Inner>> {
  friend visits_parameters<ln_tuning_norm>;

 public:
  using backend = typename Inner::backend;
  using B = backend;
  using tensor = typename B::tensor;
  using value_type = typename B::value_type;
  using tuned_parameter = parameter<B, groups::ln_tuning, true>;
  /// A layer norm has a shift; an RMS norm has a scale only.
  static constexpr bool has_shift = requires(Inner& n) { n.bias(); };

  ln_tuning_norm(typename B::context& ctx, std::size_t width, double eps, std::string name, const method_config& cfg)
      : inner_(ctx, width, eps, name, cfg), name_(std::move(name)) {
    const ln_tuning_config& c = cfg.get<ln_tuning_config>();
    if (!detail::run_time_selects(c.enabled, c.target_modules, name_, "ln_tuning")) return;
    active_ = true;
    weight_.declared = shape{width};
    weight_.allocate_grad(ctx);
    if constexpr (has_shift) {
      bias_.declared = shape{width};
      bias_.allocate_grad(ctx);
    }
  }

  const tensor& forward(typename B::context& ctx, const tensor& x) {
    if (!active_ || merged_) return inner_.forward(ctx, x);
    if (x.cols() != width())
      throw shape_error(peft::detail::concat("ln_tuning on '", name_, "': input shape ", x.shape(), " does not end in ", width()));
    copy_base_if_unset(ctx);
    input_ = &x;
    const auto eps = value_type(inner_.eps());
    if constexpr (has_shift) B::layer_norm_forward(ctx, x, weight_.value, bias_.value, eps, y_, mean_, rstd_);
    else B::rms_norm_forward(ctx, x, weight_.value, eps, y_, rstd_);
    return y_;
  }
  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    if (!active_) return inner_.backward(ctx, dy);
    if (merged_)
      throw error(peft::detail::concat("ln_tuning on '", name_, "': backward through a merged norm; unmerge before training"));
    if (!input_) throw error(peft::detail::concat("ln_tuning on '", name_, "': backward called before forward"));
    if constexpr (has_shift)
      B::layer_norm_backward(ctx, *input_, weight_.value, mean_, rstd_, dy, dx_, &weight_.grad, &bias_.grad);
    else B::rms_norm_backward(ctx, *input_, weight_.value, rstd_, dy, dx_, &weight_.grad);
    return dx_;
  }

  /// The base norm takes the tuned values (its own are kept for `unmerge`).
  void merge(typename B::context& ctx) {
    merge_if_possible(inner_, ctx);
    if (merged_) throw error(peft::detail::concat("ln_tuning on '", name_, "': already merged"));
    if (active_) {
      copy_base_if_unset(ctx);
      B::copy(ctx, inner_.weight().value, saved_weight_);
      B::copy(ctx, weight_.value, inner_.weight().value);
      if constexpr (has_shift) {
        B::copy(ctx, inner_.bias().value, saved_bias_);
        B::copy(ctx, bias_.value, inner_.bias().value);
      }
    }
    merged_ = true;
  }
  /// Restores the base norm's own values, bit for bit.
  void unmerge(typename B::context& ctx) {
    if (!merged_) throw error(peft::detail::concat("ln_tuning on '", name_, "': unmerge without merge"));
    if (active_) {
      B::copy(ctx, saved_weight_, inner_.weight().value);
      if constexpr (has_shift) B::copy(ctx, saved_bias_, inner_.bias().value);
      saved_weight_ = tensor{}, saved_bias_ = tensor{};
    }
    merged_ = false;
    unmerge_if_possible(inner_, ctx);
  }
  [[nodiscard]] bool merged() const noexcept { return merged_; }

  /// Activation elements kept for a step: the norm's own (output, input gradient, statistics).
  static std::uint64_t activation_elements(std::uint64_t rows, std::uint64_t width, const std::string& name,
                                           const method_config& cfg)
    requires requires { Inner::activation_elements(rows, width, name, cfg); }
  {
    return Inner::activation_elements(rows, width, name, cfg);
  }

  /// Whether this norm is tuned (the run-time options may leave it out).
  [[nodiscard]] bool active() const noexcept { return active_; }
  tuned_parameter& tuned_weight() noexcept { return weight_; }
  tuned_parameter& tuned_bias() noexcept
    requires has_shift
  {
    return bias_;
  }
  /// The base norm's parameters (what a stage-1 method such as BitFit merges into).
  auto& weight() noexcept { return inner_.weight(); }
  auto& bias() noexcept
    requires has_shift
  {
    return inner_.bias();
  }
  [[nodiscard]] std::size_t width() const noexcept { return inner_.width(); }
  [[nodiscard]] double eps() const noexcept { return inner_.eps(); }
  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  Inner& inner() noexcept { return inner_; }

 private:
  void copy_base_if_unset(typename B::context& ctx) {
    if (weight_.value.empty()) B::copy(ctx, inner_.weight().value, weight_.value);
    if constexpr (has_shift)
      if (bias_.value.empty()) B::copy(ctx, inner_.bias().value, bias_.value);
  }
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    self.inner_.visit_parameters(prefix, f);
    if (!self.active_) return;
    f(prefix + "ln_tuning_layers.weight", self.weight_);
    if constexpr (has_shift) f(prefix + "ln_tuning_layers.bias", self.bias_);
  }

  Inner inner_;
  std::string name_;
  bool active_ = false, merged_ = false;
  tuned_parameter weight_, bias_;  // bias_: layer norms only
  const tensor* input_ = nullptr;
  tensor y_, dx_, mean_, rstd_, saved_weight_, saved_bias_;
};

namespace detail {
/// LayerNorm tuning in Hugging Face PEFT's files: `peft_type` LN_TUNING, `LNTuningConfig`'s keys,
/// tensors `<module>.ln_tuning_layers.weight` / `.bias`.
struct ln_tuning_peft_format {
  static constexpr std::string_view peft_type = "LN_TUNING";

  /// target_modules: the shortest name suffixes that select exactly the tuned norms among the
  /// model's norms, else a regular expression.
  static void write_config(nlohmann::json& j, const ln_tuning_config&, const io::adapter_contents& contents) {
    std::set<std::string> modules;
    const std::string suffix = ".ln_tuning_layers.weight";
    for (const auto& p : contents.parameters)
      if (const auto m = io::detail::strip_suffix(p, suffix); m.size() < p.size()) modules.insert(m);
    j.update({{"exclude_modules", nullptr},
              {"target_modules", modules.empty() ? nlohmann::json(nullptr)
                                                 : io::detail::target_modules_for(modules, contents.norm_modules, {})}});
  }

  /// target_modules (a list of module-name suffixes or one regular expression, as PEFT allows);
  /// exclude_modules is refused by name.
  static void read_config(const io::json_config& f, ln_tuning_config& c) {
    const auto& j = f.json();
    if (const auto t = io::detail::read_module_selection(f, "target_modules", io::detail::suffix_match::dotted)) c.target_modules = *t;
    if (f.has("exclude_modules") && !(j["exclude_modules"].is_array() && j["exclude_modules"].empty()))
      f.fail("'exclude_modules' is not supported; name the norms in target_modules instead");
  }

  /// PEFT's in-memory names carry the adapter name (`ln_tuning_layers.default.weight`); saved files
  /// do not.
  static std::string parameter_name(std::string key) {
    const std::string in_memory = ".ln_tuning_layers.default.";
    if (const auto at = key.find(in_memory); at != std::string::npos) key.replace(at, in_memory.size(), ".ln_tuning_layers.");
    return key;
  }
};
}  // namespace detail

/// PEFT method: LayerNorm tuning on the model's layer norms and RMS norms (every one, or those
/// `target_modules` names). It targets no linear role. Stage 0 for norms: innermost, so BitFit's
/// shift delta (stage 1) adds to the tuned norm's output and merges after it.
struct ln_tuning {
  static constexpr std::string_view name = "ln_tuning";
  static constexpr int stage = 0;
  using options = ln_tuning_config;
  using groups = group_set<peft::groups::ln_tuning>;
  using peft_format = detail::ln_tuning_peft_format;
  template <class Role>
  static constexpr bool targets = false;
  template <class Role>
  using base_groups = group_set<>;
  template <class Inner>
  using wrap = Inner;
  template <class Inner>
  using wrap_norm = ln_tuning_norm<Inner>;
  template <class Inner>
  using wrap_rms_norm = ln_tuning_norm<Inner>;
};

}  // namespace peft::methods
