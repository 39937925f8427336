#pragma once
/// \file LoRA (Hu et al. 2021, arXiv:2106.09685), rsLoRA (Kalajdzievski 2023, arXiv:2312.03732) and
/// DoRA (Liu et al. 2024, arXiv:2402.09353; the magnitude part is methods/dora.hpp).
///
/// y = W x + b + s * B (A dropout(x)), A (r x in) kaiming-uniform (a = sqrt(5)), B (out x r) zeros,
/// s = alpha / r (or alpha / sqrt(r) with rsLoRA) -- Hugging Face PEFT's `LoraLayer` defaults. With
/// `use_dora`, each output row is rescaled by a learned magnitude over the norm of W + s B A.

#include <algorithm>
#include <cstdint>
#include <cmath>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <set>

#include "peft/core/error.hpp"
#include "peft/core/groups.hpp"
#include "peft/core/layer.hpp"
#include "peft/core/method_config.hpp"
#include "peft/core/random.hpp"
#include "peft/core/roles.hpp"
#include "peft/io/peft_format.hpp"
#include "peft/layers/dropout.hpp"
#include "peft/layers/linear.hpp"
#include "peft/methods/dora.hpp"
#include "peft/methods/wrapper.hpp"

namespace peft {

/// LoRA (Hu et al. 2021): `W x + s * B A dropout(x)` with `s = alpha / r`, or `alpha / sqrt(r)` when
/// `use_rslora` (Kalajdzievski 2023). Requirements: 1 <= r <= min(in, out), alpha > 0,
/// 0 <= dropout < 1. Defaults follow Hugging Face PEFT's `LoraConfig`.
/// Run-time layer selection and per-module overrides follow PEFT's `LoraConfig`:
/// `layers_to_transform` (empty = all) keeps LoRA only on modules whose layer index (the number in
/// the last `<name>.<i>.` segment of the module path, PEFT's default `layers_pattern`) is listed;
/// `rank_pattern` / `alpha_pattern` map a regular expression to a rank / alpha for the modules whose
/// name matches `(.*\.)?<key>` in full (first matching key wins); `target_modules` (empty = every
/// module of the plan's LoRA roles) is a regular expression that a module name must match in full, as
/// PEFT's string form of `target_modules`: it narrows the compile-time roles at run time (a
/// command-line tool builds LoRA on all roles and picks here). `use_dora` adds DoRA's magnitude
/// vector to every selected module (PEFT's `use_dora`; see methods/dora.hpp).
struct lora_config {
  bool enabled = true;  ///< false: no module gets LoRA (a plan compiled with LoRA then trains without it)
  std::size_t r = 8;
  double alpha = 8;
  double dropout = 0;
  bool use_rslora = false;
  bool use_dora = false;
  std::vector<int> layers_to_transform{};
  std::vector<std::pair<std::string, std::size_t>> rank_pattern{};
  std::vector<std::pair<std::string, double>> alpha_pattern{};
  std::string target_modules{};
};

namespace groups {
/// LoRA's down-projection A (r x in).
struct lora_a {
  static constexpr std::string_view name = "lora_a";
  static constexpr bool method_group = true;
};
/// LoRA's up-projection B (out x r).
struct lora_b {
  static constexpr std::string_view name = "lora_b";
  static constexpr bool method_group = true;
};
}  // namespace groups

}  // namespace peft

namespace peft::methods {

namespace detail {
using io::detail::layer_index;
using io::detail::target_modules_for;
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
  if (!c.enabled) return std::nullopt;
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
/// (groups `lora_a`, `lora_b`), and with DoRA `lora_magnitude_vector` ([out], group `lora_magnitude`).
/// Mergeable: `merge` adds s * B A to the base weight (DoRA: and rescales its rows).
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
      : lora_linear(ctx, o, cfg, lora_config_for(cfg.get<lora_config>(), o.name)) {}

  const tensor& forward(typename B::context& ctx, const tensor& x) {
    const tensor& base = inner_.forward(ctx, x);
    if (merged_ || !active()) return base;
    // The scaling is applied to the rank-r activations A x (rows x r) rather than to the output or,
    // in backward, to the output gradient (rows x out): the same products, two fewer full passes.
    const tensor& x_d = dropout_.forward(ctx, x);
    tensor& scaled_h = block_buffer<B>(ctx, scaled_h_);  // B's input: its own in training
    B::copy(ctx, a_->forward(ctx, x_d), scaled_h);
    B::scale(ctx, value_type(scaling_), scaled_h);
    const tensor& l = b_->forward(ctx, scaled_h);
    if (dora_) {
      dora_->update_scale(ctx, base_linear(), a_->weight().value, b_->weight().value, scaling_);
      return dora_->forward(ctx, base_linear(), x_d, base, l, !dropout_.active() && !base_trains);
    }
    tensor& y = block_buffer<B>(ctx, y_);
    B::copy(ctx, base, y);
    B::axpy(ctx, value_type(1), l, y);
    return y;
  }
  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    if (!active()) return inner_.backward(ctx, dy);
    if (merged_)
      throw error(peft::detail::concat("lora on '", name(), "': backward through a merged layer; unmerge before training"));
    if (dora_) return dora_backward(ctx, dy);
    tensor& dh = block_buffer<B>(ctx, dh_);
    B::copy(ctx, b_->backward(ctx, dy), dh);  // d(s A x): B's weight gradient already has the s
    B::scale(ctx, value_type(scaling_), dh);
    const tensor& dx_lora = dropout_.backward(ctx, a_->backward(ctx, dh));
    tensor& dx = block_buffer<B>(ctx, dx_);
    B::copy(ctx, inner_.backward(ctx, dy), dx);
    B::axpy(ctx, value_type(1), dx_lora, dx);
    return dx;
  }


  /// W += s * B A (DoRA: W <- diag(m / ||W + s B A||) (W + s B A)); the LoRA path is then skipped.
  /// Merging twice is an error (it would double-count).
  void merge(typename B::context& ctx) {
    merge_if_possible(inner_, ctx);
    if (merged_) throw error(peft::detail::concat("lora on '", name(), "': already merged"));
    if (dora_) dora_->merge(ctx, base_linear(), a_->weight().value, b_->weight().value, scaling_);
    else if (active())
      B::gemm(ctx, op::n, op::n, value_type(scaling_), b_->weight().value, a_->weight().value, value_type(1),
            base_linear().weight().dense_value(ctx));
    merged_ = true;
  }
  /// W -= s * B A (DoRA: the rows divided by the merge's scale first), restoring the base weight up
  /// to rounding.
  void unmerge(typename B::context& ctx) {
    if (!merged_) throw error(peft::detail::concat("lora on '", name(), "': unmerge without merge"));
    if (dora_) dora_->unmerge(ctx, base_linear(), a_->weight().value, b_->weight().value, scaling_);
    else if (active())
      B::gemm(ctx, op::n, op::n, value_type(-scaling_), b_->weight().value, a_->weight().value, value_type(1),
            base_linear().weight().dense_value(ctx));
    merged_ = false;
    unmerge_if_possible(inner_, ctx);
  }
  [[nodiscard]] bool merged() const noexcept { return merged_; }

  /// Activation elements kept for a step: the inner layer's, the dropout mask and output, A's and
  /// B's buffers, the output, the scaled rank-r activations and their gradient, the input gradient.
  static std::uint64_t activation_elements(const layers::linear_site& s) {
    const std::uint64_t inner = Inner::activation_elements(s);
    const auto selected = lora_config_for(s.cfg.get<lora_config>(), s.name);
    if (!selected) return inner;
    const std::uint64_t rows = s.rows, r = selected->r;
    const bool dropout_active = s.training && selected->dropout > 0;
    const std::uint64_t dropout = layers::dropout<B>::activation_elements(rows * s.in, dropout_active);
    const std::uint64_t dora =
        selected->use_dora ? dora_magnitude<B>::activation_elements(rows, s.in, s.out, r, !dropout_active && !base_trains) : 0;
    return inner + dropout + rows * (s.in + r) + rows * (r + s.out) + rows * (s.out + 2 * r + s.in) + dora;
  }

  /// Of those, the shared backward buffers: the inner layer's; A's, B's and the dropout's input
  /// gradients; without DoRA also the rank-r gradient and the input gradient.
  static std::uint64_t backward_elements(const layers::linear_site& s) {
    const std::uint64_t inner = layers::backward_elements_of<Inner>(s);
    const auto selected = lora_config_for(s.cfg.get<lora_config>(), s.name);
    if (!selected) return inner;
    const std::uint64_t rows = s.rows, r = selected->r;
    const bool dropout_active = s.training && selected->dropout > 0;
    return inner + rows * (s.in + r) + (dropout_active ? rows * s.in : 0) + (selected->use_dora ? 0 : rows * (r + s.in));
  }

  [[nodiscard]] double scaling() const noexcept { return scaling_; }
  /// The rank of this module (after rank_pattern); 0 when layers_to_transform leaves it out.
  [[nodiscard]] std::size_t rank() const noexcept { return a_ ? a_->out_features() : 0; }
  /// Whether this module carries a LoRA update (layers_to_transform may leave it out).
  [[nodiscard]] bool active() const noexcept { return a_.has_value(); }
  a_layer& lora_A() { return a_.value(); }
  b_layer& lora_B() { return b_.value(); }
  /// DoRA's magnitude and norm (null without `use_dora`).
  dora_magnitude<B>* dora() noexcept { return dora_ ? &*dora_ : nullptr; }

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
    if (own.use_dora) dora_.emplace(ctx, o.out_features, own.r, o.name);
  }

  /// Whether the base layer has trainable parameters (a plan with `methods::full`): DoRA then takes
  /// its general path, which also gives the base weight its gradient through the rescaled term.
  static constexpr bool base_trains = [] {
    using L = std::remove_cvref_t<decltype(std::declval<Inner&>().base_linear())>;
    return L::weight_parameter::trainable || L::bias_parameter::trainable;
  }();

  /// DoRA's backward: g ⊙ dy through the LoRA path (and, on the direct path, through the base
  /// layer), ((g - 1) ⊙ dy) W through the dropped-out input otherwise.
  const tensor& dora_backward(typename B::context& ctx, const tensor& dy) {
    const tensor& scaled_dy = dora_->output_gradient(ctx, base_linear(), dy);
    B::copy(ctx, b_->backward(ctx, scaled_dy), dh_);
    B::scale(ctx, value_type(scaling_), dh_);
    const tensor& dx_d_lora = a_->backward(ctx, dh_);
    if (dora_->direct()) {  // no dropout at work, base frozen: the base layer sees g ⊙ dy
      B::copy(ctx, inner_.backward(ctx, scaled_dy), dx_);
      B::axpy(ctx, value_type(1), dx_d_lora, dx_);
      return dx_;
    }
    tensor& dx_d = dora_->base_term_gradient(ctx, base_linear(), dy);
    B::axpy(ctx, value_type(1), dx_d_lora, dx_d);
    const tensor& dx_dropped = dropout_.backward(ctx, dx_d);
    B::copy(ctx, inner_.backward(ctx, dy), dx_);
    B::axpy(ctx, value_type(1), dx_dropped, dx_);
    return dx_;
  }

  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    self.inner_.visit_parameters(prefix, f);
    if (!self.a_) return;
    self.a_->visit_parameters(prefix + "lora_A.", f);
    self.b_->visit_parameters(prefix + "lora_B.", f);
    if (self.dora_) f(prefix + "lora_magnitude_vector", self.dora_->magnitude());
  }

  double scaling_;
  layers::dropout<B> dropout_;
  std::optional<a_layer> a_;
  std::optional<b_layer> b_;
  std::optional<dora_magnitude<B>> dora_;
  bool merged_ = false;
  tensor y_, scaled_h_, dh_, dx_;
};

namespace detail {
/// LoRA in Hugging Face PEFT's files: `peft_type` LORA, `LoraConfig`'s keys, tensors
/// `<module>.lora_A.weight` / `.lora_B.weight` (the parameter names themselves).
struct lora_peft_format {
  static constexpr std::string_view peft_type = "LORA";

  static void write_config(nlohmann::json& j, const lora_config& c, const io::adapter_contents& contents) {
    std::set<std::string> modules;
    const std::string a_suffix = ".lora_A.weight";
    for (const auto& p : contents.parameters)
      if (const auto m = io::detail::strip_suffix(p, a_suffix); m.size() < p.size()) modules.insert(m);
    j.update({{"alpha_pattern", nlohmann::json::object()},
              {"bias", "none"},
              {"fan_in_fan_out", false},
              {"init_lora_weights", true},
              {"layers_pattern", nullptr},
              {"layers_to_transform", nullptr},
              {"lora_alpha", c.alpha},
              {"lora_dropout", c.dropout},
              {"r", c.r},
              {"rank_pattern", nlohmann::json::object()},
              {"target_modules", modules.empty() ? nlohmann::json(nullptr)
                                                 : target_modules_for(modules, contents.linear_modules, c.layers_to_transform)},
              {"use_dora", c.use_dora},
              {"use_rslora", c.use_rslora}});
    // lora_alpha is an integer in PEFT's configs when it is one.
    if (c.alpha == double(std::int64_t(c.alpha))) j["lora_alpha"] = std::int64_t(c.alpha);
    if (!c.layers_to_transform.empty() && j["target_modules"].is_array()) j["layers_to_transform"] = c.layers_to_transform;
    for (const auto& [k, r] : c.rank_pattern) j["rank_pattern"][k] = r;
    for (const auto& [k, a] : c.alpha_pattern) j["alpha_pattern"][k] = a;
  }

  /// r, lora_alpha (PEFT's default 8), lora_dropout, use_rslora, layers_to_transform, rank_pattern,
  /// alpha_pattern, target_modules (PEFT's two forms: a list of module-name suffixes, or one
  /// regular expression matched in full) and use_dora.
  static void read_config(const io::json_config& f, lora_config& c) {
    const auto& j = f.json();
    auto fail = [&](const std::string& key, const char* want) {
      f.fail(peft::detail::concat("'", key, "' must be ", want, ", got ", j.contains(key) ? j[key].dump() : "nothing"));
    };
    if (!j.contains("r") || !j["r"].is_number_unsigned()) fail("r", "a positive integer");
    c.r = j["r"].get<std::size_t>();
    c.alpha = 8;
    f.read("lora_alpha", c.alpha);
    f.read("lora_dropout", c.dropout);
    f.read("use_rslora", c.use_rslora);
    f.read("use_dora", c.use_dora);
    if (f.has("layers_to_transform")) {
      const auto& l = j["layers_to_transform"];
      if (l.is_number_integer()) c.layers_to_transform = {l.get<int>()};
      else if (l.is_array() && std::all_of(l.begin(), l.end(), [](const auto& v) { return v.is_number_integer(); }))
        c.layers_to_transform = l.get<std::vector<int>>();
      else fail("layers_to_transform", "an integer or a list of integers");
    }
    for (const char* key : {"rank_pattern", "alpha_pattern"}) {
      if (!f.has(key)) continue;
      if (!j[key].is_object()) fail(key, "an object");
      for (auto it = j[key].begin(); it != j[key].end(); ++it) {
        if (std::string(key) == "rank_pattern") {
          if (!it.value().is_number_unsigned()) fail(key, "an object of positive integers");
          c.rank_pattern.emplace_back(it.key(), it.value().get<std::size_t>());
        } else {
          if (!it.value().is_number()) fail(key, "an object of numbers");
          c.alpha_pattern.emplace_back(it.key(), it.value().get<double>());
        }
      }
    }
    if (const auto t = io::detail::read_module_selection(f, "target_modules", io::detail::suffix_match::dotted)) c.target_modules = *t;
  }

  /// PEFT's in-memory names carry the adapter name (`lora_A.default.weight`,
  /// `lora_magnitude_vector.default.weight`); saved files do not, but both are accepted.
  static std::string parameter_name(std::string key) {
    static const std::regex adapter_name(R"(\.(lora_[AB])\.default\.)");
    static const std::regex magnitude(R"(\.lora_magnitude_vector\.default\.weight$)");
    return std::regex_replace(std::regex_replace(key, adapter_name, ".$1."), magnitude, ".lora_magnitude_vector");
  }
};
}  // namespace detail

/// PEFT method: LoRA on the linear layers of the listed roles (at least one). Stage 0: innermost, so
/// it sees the plain base weight whatever else the plan adds.
template <roles::Role... Targets>
struct lora {
  static_assert(sizeof...(Targets) > 0, "peft::lora<Roles...>: name at least one role, e.g. lora<roles::query, roles::value>");
  static constexpr std::string_view name = "lora";
  static constexpr int stage = 0;
  using options = lora_config;
  using groups = group_set<peft::groups::lora_a, peft::groups::lora_b, peft::groups::lora_magnitude>;
  using peft_format = detail::lora_peft_format;
  template <class Role>
  static constexpr bool targets = (std::is_same_v<Role, Targets> || ...);
  template <class Role>
  using base_groups = group_set<>;
  template <class Inner>
  using wrap = lora_linear<Inner>;
};

}  // namespace peft::methods
