#pragma once
/// \file (IA)3 (Liu et al. 2022, arXiv:2205.05638): learned vectors that rescale activations.
///
/// On an attention projection (key, value) the vector scales the layer's output,
/// y = l ⊙ (W x + b); on a feed-forward module (the FFN's output projection) it scales the layer's
/// input, y = W (l ⊙ x) + b, which is the paper's scaling of the FFN's intermediate activations. Each
/// vector starts at ones, so the model starts unchanged. Both forms fold into the base weight:
/// rows of W (and b) times l, or columns of W times l. This is Hugging Face PEFT's `IA3` method, its
/// `ia3_l` tensors shaped [out, 1] or [1, in] as PEFT stores them.

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "peft/core/error.hpp"
#include "peft/core/groups.hpp"
#include "peft/core/layer.hpp"
#include "peft/core/method_config.hpp"
#include "peft/core/random.hpp"
#include "peft/core/roles.hpp"
#include "peft/io/peft_format.hpp"
#include "peft/layers/linear.hpp"
#include "peft/methods/wrapper.hpp"

namespace peft {

/// (IA)3's run-time options, as PEFT's `IA3Config`. `target_modules` (a regular expression matched in
/// full; empty = every module of the plan's (IA)3 roles) narrows the compile-time roles.
/// `feedforward_modules` decides which selected modules scale their input rather than their output:
/// unset, by role (the FFN output projection does; see `methods::ia3`); set, a regular expression
/// matched in full (an empty one selects none). `init_ia3_weights`: true starts every vector at ones
/// (the identity, PEFT's default); false draws them from N(1, 0.1^2), for tests that need a start
/// away from the identity. Guarantees: a module `target_modules` leaves out has no parameter.
struct ia3_config {
  bool enabled = true;  ///< false: no module gets (IA)3 (a plan compiled with it then trains without)
  std::string target_modules{};
  std::optional<std::string> feedforward_modules{};
  bool init_ia3_weights = true;
};

namespace groups {
/// (IA)3's scaling vectors.
struct ia3 {
  static constexpr std::string_view name = "ia3";
  static constexpr bool method_group = true;
};
}  // namespace groups

}  // namespace peft

namespace peft::methods {

namespace detail {
inline bool ia3_selects(const ia3_config& c, const std::string& name) {
  return run_time_selects(c.enabled, c.target_modules, name, "ia3");
}
/// Whether module `name` scales its input: `feedforward_modules` when set, else the role's default.
inline bool ia3_feedforward(const ia3_config& c, const std::string& name, bool role_default) {
  if (!c.feedforward_modules) return role_default;
  return !c.feedforward_modules->empty() && run_time_selects(true, *c.feedforward_modules, name, "ia3 feedforward_modules");
}
}  // namespace detail

/// A linear layer (`Inner`) with an (IA)3 vector `ia3_l` (group `ia3`, trainable): shape [out, 1]
/// scaling the output, or [1, in] scaling the input on a feed-forward module (`FeedforwardByDefault`
/// is the role's default; `ia3_config::feedforward_modules` overrides it). Mergeable; `unmerge`
/// divides again and refuses a vector with a zero entry (that merge lost the row or column).
template <class Inner, bool FeedforwardByDefault>
class ia3_linear : public linear_wrapper<Inner>, public visits_parameters<ia3_linear<Inner, FeedforwardByDefault>> {
  friend visits_parameters<ia3_linear>;
  using linear_wrapper<Inner>::inner_;

 public:
  using backend = typename Inner::backend;
  using B = backend;
  using linear_wrapper<Inner>::name;
  using linear_wrapper<Inner>::base_linear;
  using tensor = typename B::tensor;
  using value_type = typename B::value_type;
  using scale_parameter = parameter<B, groups::ia3, true>;

  ia3_linear(typename B::context& ctx, const layers::linear_options& o, const method_config& cfg)
      : linear_wrapper<Inner>(ctx, o, cfg) {
    const ia3_config& c = cfg.get<ia3_config>();
    if (!detail::ia3_selects(c, o.name)) return;  // left out at run time: the layer passes through
    feedforward_ = detail::ia3_feedforward(c, o.name, FeedforwardByDefault);
    const shape s = feedforward_ ? shape{1, o.in_features} : shape{o.out_features, 1};
    init_rng rng(derive_seed(o.seed, 0x1A3));
    layers::detail::init_tensor<B>(ctx, s, scale_.value, [&] { return c.init_ia3_weights ? 1.0 : rng.normal(1.0, 0.1); });
    scale_.allocate_grad(ctx);
  }

  const tensor& forward(typename B::context& ctx, const tensor& x) {
    if (!active() || merged_) return inner_.forward(ctx, x);
    if (feedforward_) {
      x_ = &x;
      B::copy(ctx, x, scaled_);
      B::multiply_row_vector(ctx, scaled_, scale_.value);
      return inner_.forward(ctx, scaled_);
    }
    h_ = &inner_.forward(ctx, x);
    B::copy(ctx, *h_, scaled_);
    B::multiply_row_vector(ctx, scaled_, scale_.value);
    return scaled_;
  }
  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    if (!active()) return inner_.backward(ctx, dy);
    if (merged_)
      throw error(peft::detail::concat("ia3 on '", name(), "': backward through a merged layer; unmerge before training"));
    if (!(feedforward_ ? x_ : h_)) throw error(peft::detail::concat("ia3 on '", name(), "': backward called before forward"));
    if (feedforward_) {  // y = inner(l ⊙ x): dl = sum over rows of dz ⊙ x, dx = dz ⊙ l
      const tensor& dz = inner_.backward(ctx, dy);
      accumulate_scale_grad(ctx, dz, *x_);
      B::copy(ctx, dz, grad_);
      B::multiply_row_vector(ctx, grad_, scale_.value);
      return grad_;
    }
    accumulate_scale_grad(ctx, dy, *h_);  // y = l ⊙ h: dl = sum over rows of dy ⊙ h, dh = dy ⊙ l
    B::copy(ctx, dy, grad_);
    B::multiply_row_vector(ctx, grad_, scale_.value);
    return inner_.backward(ctx, grad_);
  }

  /// Folds the vector into the base layer (after the inner methods fold theirs): W[i, :] *= l[i] and
  /// b[i] *= l[i], or W[:, j] *= l[j] on a feed-forward module.
  void merge(typename B::context& ctx) {
    merge_if_possible(inner_, ctx);
    if (merged_) throw error(peft::detail::concat("ia3 on '", name(), "': already merged"));
    if (active()) rescale(ctx, false);
    merged_ = true;
  }
  /// Divides the vector out again, then unmerges the inner methods.
  void unmerge(typename B::context& ctx) {
    if (!merged_) throw error(peft::detail::concat("ia3 on '", name(), "': unmerge without merge"));
    if (active()) rescale(ctx, true);
    merged_ = false;
    unmerge_if_possible(inner_, ctx);
  }
  [[nodiscard]] bool merged() const noexcept { return merged_; }

  /// Activation elements kept for a step: the inner layer's, then the scaled tensor, the product for
  /// the vector's gradient and the gradient passed on (input-sized on a feed-forward module).
  static std::uint64_t activation_elements(const layers::linear_site& s) {
    const ia3_config& c = s.cfg.get<ia3_config>();
    if (!detail::ia3_selects(c, s.name)) return Inner::activation_elements(s);
    const std::uint64_t width = detail::ia3_feedforward(c, s.name, FeedforwardByDefault) ? s.in : s.out;
    return Inner::activation_elements(s) + 3 * std::uint64_t(s.rows) * width;
  }

  /// Whether this module carries a vector (run-time options may leave it out).
  [[nodiscard]] bool active() const noexcept { return !scale_.value.empty(); }
  /// Whether the vector scales the input (a feed-forward module) rather than the output.
  [[nodiscard]] bool feedforward() const noexcept { return feedforward_; }
  scale_parameter& ia3_l() noexcept { return scale_; }

 private:
  void accumulate_scale_grad(typename B::context& ctx, const tensor& upstream, const tensor& scaled_input) {
    B::multiply(ctx, upstream, scaled_input, product_);
    B::sum_rows(ctx, product_, value_type(1), scale_.grad);
  }
  void rescale(typename B::context& ctx, bool divide) {
    const auto l = B::copy_to_host(ctx, scale_.value);
    if (divide)
      for (std::size_t i = 0; i < l.size(); ++i)
        if (l[i] == value_type(0))
          throw error(peft::detail::concat("ia3 on '", name(), "': cannot unmerge, ia3_l[", i,
                                           "] is 0 and merging it erased that ", feedforward_ ? "column" : "row"));
    auto& w = base_linear().weight().dense_value(ctx);
    auto wh = B::copy_to_host(ctx, w);
    const std::size_t in = w.cols();
    for (std::size_t i = 0; i < wh.size(); ++i) {
      const value_type f = l[feedforward_ ? i % in : i / in];
      wh[i] = divide ? wh[i] / f : wh[i] * f;
    }
    B::copy_from_host(ctx, wh, w.shape(), w);
    if (!feedforward_ && base_linear().has_bias()) {
      auto& b = base_linear().bias().value;
      auto bh = B::copy_to_host(ctx, b);
      for (std::size_t i = 0; i < bh.size(); ++i) bh[i] = divide ? bh[i] / l[i] : bh[i] * l[i];
      B::copy_from_host(ctx, bh, b.shape(), b);
    }
  }
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    self.inner_.visit_parameters(prefix, f);
    if (self.active()) f(prefix + "ia3_l", self.scale_);
  }

  scale_parameter scale_;
  bool feedforward_ = false, merged_ = false;
  const tensor* x_ = nullptr;  // feed-forward: the unscaled input
  const tensor* h_ = nullptr;  // otherwise: the inner layer's output
  tensor scaled_, product_, grad_;
};

namespace detail {
/// (IA)3 in Hugging Face PEFT's files: `peft_type` IA3, `IA3Config`'s keys, tensors `<module>.ia3_l`.
struct ia3_peft_format {
  static constexpr std::string_view peft_type = "IA3";

  /// target_modules as a list of module-name suffixes when one selects exactly the (IA)3 modules,
  /// else a regular expression; feedforward_modules (the modules whose vector is [1, in]) as the
  /// subset of that list PEFT requires, or a regular expression when the list cannot say it.
  static void write_config(nlohmann::json& j, const ia3_config& c, const io::adapter_contents& contents) {
    std::set<std::string> modules, feedforward;
    const std::string suffix = ".ia3_l";
    for (const auto& p : contents.parameters) {
      const auto m = io::detail::strip_suffix(p, suffix);
      if (m.size() == p.size()) continue;
      modules.insert(m);
      if (const auto it = contents.shapes.find(p); it != contents.shapes.end() && it->second.rank() == 2 && it->second[0] == 1)
        feedforward.insert(m);
    }
    const nlohmann::json targets = modules.empty() ? nlohmann::json(nullptr)
                                                   : io::detail::target_modules_for(modules, contents.linear_modules, {});
    j.update({{"exclude_modules", nullptr},
              {"fan_in_fan_out", false},
              {"feedforward_modules", feedforward_list(targets, modules, feedforward)},
              {"init_ia3_weights", c.init_ia3_weights},
              {"target_modules", targets}});
  }

  /// target_modules and feedforward_modules (each a list or a regular expression, as PEFT allows),
  /// init_ia3_weights. fan_in_fan_out (Conv1D models) and exclude_modules are refused by name.
  static void read_config(const io::json_config& f, ia3_config& c) {
    const auto& j = f.json();
    if (const auto t = io::detail::read_module_selection(f, "target_modules", io::detail::suffix_match::dotted)) c.target_modules = *t;
    // PEFT matches a feedforward list by plain suffix; absent or null, no module is feed-forward.
    c.feedforward_modules = io::detail::read_module_selection(f, "feedforward_modules", io::detail::suffix_match::plain).value_or("");
    f.read("init_ia3_weights", c.init_ia3_weights);
    bool transposed = false;
    f.read("fan_in_fan_out", transposed);
    if (transposed) f.fail("'fan_in_fan_out': true (Conv1D weights, GPT-2 style) is not supported");
    if (f.has("exclude_modules") && !(j["exclude_modules"].is_array() && j["exclude_modules"].empty()))
      f.fail("'exclude_modules' is not supported; name the modules in target_modules instead");
  }

  /// PEFT's in-memory names carry the adapter name (`ia3_l.default`); saved files do not.
  static std::string parameter_name(std::string key) {
    const std::string in_memory = ".ia3_l.default";
    return io::detail::strip_suffix(key, in_memory).size() < key.size() ? io::detail::strip_suffix(key, in_memory) + ".ia3_l"
                                                                          : key;
  }

 private:
  /// Whether PEFT's plain-suffix list `entries` marks exactly `feedforward` among `modules`.
  static bool marks_exactly(const std::vector<std::string>& entries, const std::set<std::string>& modules,
                            const std::set<std::string>& feedforward) {
    for (const auto& m : modules) {
      bool marked = false;
      for (const auto& e : entries) marked = marked || (m.size() >= e.size() && m.compare(m.size() - e.size(), e.size(), e) == 0);
      if (marked != bool(feedforward.count(m))) return false;
    }
    return true;
  }
  static nlohmann::json feedforward_list(const nlohmann::json& targets, const std::set<std::string>& modules,
                                         const std::set<std::string>& feedforward) {
    if (feedforward.empty()) return nlohmann::json::array();
    if (targets.is_array()) {  // PEFT requires the list to be a subset of target_modules
      std::vector<std::string> entries;
      for (const auto& t : targets) {
        const auto s = t.get<std::string>();
        bool all_feedforward = true;
        for (const auto& m : modules)
          if (io::detail::ends_with_module(m, s) && !feedforward.count(m)) all_feedforward = false;
        if (all_feedforward) entries.push_back(s);
      }
      if (marks_exactly(entries, modules, feedforward)) return entries;
    }
    std::string re;
    for (const auto& m : feedforward) re += (re.empty() ? "" : "|") + io::detail::regex_escape(m);
    return "(" + re + ")";
  }
};
}  // namespace detail

/// PEFT method: (IA)3 vectors on the linear layers of the listed roles (at least one); `ffn_out`
/// scales its input (PEFT's `feedforward_modules`), every other role its output. Stage 3: outermost,
/// so a vector scales everything the layer computes (LoRA and BitFit included), and merging folds the
/// inner methods first. The paper's placement is `ia3<roles::key, roles::value, roles::ffn_out>`.
template <roles::Role... Targets>
struct ia3 {
  static_assert(sizeof...(Targets) > 0, "peft::ia3<Roles...>: name at least one role, e.g. ia3<roles::key, roles::value, roles::ffn_out>");
  static constexpr std::string_view name = "ia3";
  static constexpr int stage = 3;
  using options = ia3_config;
  using groups = group_set<peft::groups::ia3>;
  using peft_format = detail::ia3_peft_format;
  template <class Role>
  static constexpr bool targets = (std::is_same_v<Role, Targets> || ...);
  template <class Role>
  using base_groups = group_set<>;
  template <class Inner>
  using wrap = ia3_linear<Inner, false>;
  template <class Role, class Inner>
  using wrap_role = ia3_linear<Inner, std::is_same_v<Role, roles::ffn_out>>;
};

}  // namespace peft::methods
