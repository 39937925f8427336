#pragma once
/// \file VeRA (Kopiczko et al. 2024, arXiv:2310.11454): one pair of frozen random matrices shared by
/// every adapted layer, and two trainable scaling vectors per layer.
///
/// y = W x + b + λ_b ⊙ (B_s (λ_d ⊙ (A_s x))), where A (r x max_in) and B (max_out x r) are drawn once
/// for the whole model from a seed (Kaiming-uniform, as PEFT draws them) and each layer uses the
/// slices A_s = A[:, :in] and B_s = B[:out, :]. λ_d (r) starts at `d_initial`, λ_b (out) at zero, so
/// the model starts unchanged. This is Hugging Face PEFT's `VERA` method: `vera_lambda_b` and
/// `vera_lambda_d` per module, and the shared matrices once per file as `base_model.vera_A` and
/// `base_model.vera_B`.
///
/// The shared matrices depend on every adapted layer (their sizes are the largest in and out
/// features), so no layer can draw its slice alone: the layers declare their slices, and the model,
/// once built, runs the plan's `prepare` step (`prepare_methods`), where `methods::vera::prepare`
/// draws A and B and hands each layer its slices. Each layer keeps its slices as frozen parameters
/// (`vera_A`, `vera_B`, group `vera_projection`): r (in + out) values per layer, the size of a LoRA
/// of the same rank but with no gradient and no optimizer state, and the products stay plain GEMMs.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
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
#include "peft/io/checkpoint.hpp"
#include "peft/io/peft_format.hpp"
#include "peft/io/safetensors.hpp"
#include "peft/layers/dropout.hpp"
#include "peft/layers/linear.hpp"
#include "peft/methods/wrapper.hpp"

namespace peft {

/// VeRA's run-time options, as PEFT's `VeraConfig`. `r`: the rank of the shared matrices (PEFT's
/// default 256; unlike LoRA's, it may exceed a layer's sizes). `projection_prng_key`: the seed of the
/// shared matrices. `d_initial`: λ_d's start. `dropout`: on the VeRA path's input.
/// `target_modules` (a regular expression matched in full; empty = every module of the plan's VeRA
/// roles) narrows the compile-time roles. `init_weights`: true starts λ_b at zero (the identity);
/// false, as PEFT, at ones with λ_d drawn from N(0, 1), for tests that need a start away from it.
/// Guarantees: a module `target_modules` leaves out has no parameter.
struct vera_config {
  bool enabled = true;  ///< false: no module gets VeRA (a plan compiled with it then trains without)
  std::size_t r = 256;
  std::uint64_t projection_prng_key = 0;
  double d_initial = 0.1;
  double dropout = 0.0;
  std::string target_modules{};
  bool init_weights = true;
};

namespace groups {
/// VeRA's trainable scaling vectors λ_b and λ_d.
struct vera_lambda {
  static constexpr std::string_view name = "vera_lambda";
  static constexpr bool method_group = true;
};
/// VeRA's frozen slices of the shared random matrices.
struct vera_projection {
  static constexpr std::string_view name = "vera_projection";
  static constexpr bool method_group = true;
};
}  // namespace groups

}  // namespace peft

namespace peft::methods {

namespace detail {
inline bool vera_selects(const vera_config& c, const std::string& name) {
  return run_time_selects(c.enabled, c.target_modules, name, "vera");
}
/// Checks the options for layer `name`; throws `config_error` naming the option.
inline void validate_vera(const vera_config& c, const std::string& name) {
  if (c.r == 0) throw config_error(peft::detail::concat("vera on '", name, "': r must be positive"));
  if (!(c.dropout >= 0 && c.dropout < 1))
    throw config_error(peft::detail::concat("vera on '", name, "': vera_dropout = ", c.dropout, " is outside [0, 1)"));
  if (!std::isfinite(c.d_initial))
    throw config_error(peft::detail::concat("vera on '", name, "': d_initial = ", c.d_initial, " is not finite"));
}
}  // namespace detail

/// A linear layer (`Inner`) with a VeRA update. Parameters: the inner ones, then `vera_lambda_b`
/// ([out]) and `vera_lambda_d` ([r]), trainable (group `vera_lambda`), and the frozen slices
/// `vera_A` ([r, in]) and `vera_B` ([out, r]) (group `vera_projection`), which have a declared shape
/// and no value until `methods::vera::prepare` (or an adapter file) sets them. Mergeable: `merge`
/// adds diag(λ_b) B_s diag(λ_d) A_s to the base weight.
template <class Inner>
class vera_linear : public linear_wrapper<Inner>, public visits_parameters<vera_linear<Inner>> {
  friend visits_parameters<vera_linear>;
  using linear_wrapper<Inner>::inner_;

 public:
  using backend = typename Inner::backend;
  using B = backend;
  using linear_wrapper<Inner>::name;
  using linear_wrapper<Inner>::base_linear;
  using tensor = typename B::tensor;
  using value_type = typename B::value_type;
  using vector_parameter = parameter<B, groups::vera_lambda, true>;
  using projection_layer = layers::linear<B, group_set<>, groups::vera_projection, groups::vera_projection>;

  vera_linear(typename B::context& ctx, const layers::linear_options& o, const method_config& cfg)
      : linear_wrapper<Inner>(ctx, o, cfg), dropout_(0.0, o.name + ".vera_dropout") {
    const vera_config& c = cfg.get<vera_config>();
    if (!detail::vera_selects(c, o.name)) return;  // left out at run time: the layer passes through
    detail::validate_vera(c, o.name);
    dropout_ = layers::dropout<B>(c.dropout, o.name + ".vera_dropout");
    a_.emplace(ctx, layers::linear_options{.in_features = o.in_features, .out_features = c.r, .bias = false,
                                           .name = o.name + ".vera_A", .init = layers::weight_init::none});
    b_.emplace(ctx, layers::linear_options{.in_features = c.r, .out_features = o.out_features, .bias = false,
                                           .name = o.name + ".vera_B", .init = layers::weight_init::none});
    init_rng rng(derive_seed(o.seed, 0x7E6A));
    layers::detail::init_tensor<B>(ctx, shape{o.out_features}, lambda_b_.value, [&] { return c.init_weights ? 0.0 : 1.0; });
    layers::detail::init_tensor<B>(ctx, shape{c.r}, lambda_d_.value,
                                   [&] { return c.init_weights ? c.d_initial : rng.normal(0.0, 1.0); });
    lambda_b_.allocate_grad(ctx);
    lambda_d_.allocate_grad(ctx);
  }

  const tensor& forward(typename B::context& ctx, const tensor& x) {
    const tensor& base = inner_.forward(ctx, x);
    if (merged_ || !active()) return base;
    require_projections();
    h_ = &a_->forward(ctx, dropout_.forward(ctx, x));  // A_s x, rows x r
    B::copy(ctx, *h_, hd_);
    B::multiply_row_vector(ctx, hd_, lambda_d_.value);
    u_ = &b_->forward(ctx, hd_);  // B_s (λ_d ⊙ A_s x), rows x out
    B::copy(ctx, *u_, y_);
    B::multiply_row_vector(ctx, y_, lambda_b_.value);
    B::axpy(ctx, value_type(1), base, y_);
    return y_;
  }
  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    if (!active()) return inner_.backward(ctx, dy);
    if (merged_)
      throw error(peft::detail::concat("vera on '", name(), "': backward through a merged layer; unmerge before training"));
    if (!u_) throw error(peft::detail::concat("vera on '", name(), "': backward called before forward"));
    accumulate(ctx, dy, *u_, lambda_b_.grad);  // dλ_b = Σ_rows dy ⊙ u
    B::copy(ctx, dy, du_);
    B::multiply_row_vector(ctx, du_, lambda_b_.value);
    const tensor& dhd = b_->backward(ctx, du_);
    accumulate(ctx, dhd, *h_, lambda_d_.grad);  // dλ_d = Σ_rows d(λ_d ⊙ h) ⊙ h
    B::copy(ctx, dhd, dh_);
    B::multiply_row_vector(ctx, dh_, lambda_d_.value);
    const tensor& dx_vera = dropout_.backward(ctx, a_->backward(ctx, dh_));
    B::copy(ctx, inner_.backward(ctx, dy), dx_);
    B::axpy(ctx, value_type(1), dx_vera, dx_);
    return dx_;
  }

  /// W += diag(λ_b) B_s diag(λ_d) A_s (after the inner methods merge); the VeRA path is then skipped.
  void merge(typename B::context& ctx) {
    merge_if_possible(inner_, ctx);
    if (merged_) throw error(peft::detail::concat("vera on '", name(), "': already merged"));
    if (active()) fold(ctx, value_type(1));
    merged_ = true;
  }
  /// W -= the same product, restoring the base weight up to rounding.
  void unmerge(typename B::context& ctx) {
    if (!merged_) throw error(peft::detail::concat("vera on '", name(), "': unmerge without merge"));
    if (active()) fold(ctx, value_type(-1));
    merged_ = false;
    unmerge_if_possible(inner_, ctx);
  }
  [[nodiscard]] bool merged() const noexcept { return merged_; }

  /// Activation elements kept for a step: the inner layer's, the dropout mask and output, the two
  /// projections' buffers, the scaled rank-r activations, the output, and the gradients in between.
  static std::uint64_t activation_elements(const layers::linear_site& s) {
    const std::uint64_t inner = Inner::activation_elements(s);
    const vera_config& c = s.cfg.get<vera_config>();
    if (!detail::vera_selects(c, s.name)) return inner;
    const std::uint64_t rows = s.rows, r = c.r;
    const std::uint64_t dropout = layers::dropout<B>::activation_elements(rows * s.in, s.training && c.dropout > 0);
    return inner + dropout + projection_layer::activation_elements({rows, s.in, r, false, s.name, s.cfg, s.training}) +
           projection_layer::activation_elements({rows, r, s.out, false, s.name, s.cfg, s.training}) +
           rows * (2 * r + 3 * s.out);
  }

  /// Whether this module carries VeRA (run-time options may leave it out).
  [[nodiscard]] bool active() const noexcept { return a_.has_value(); }
  /// The rank of the shared matrices; 0 when the module is left out.
  [[nodiscard]] std::size_t rank() const noexcept { return a_ ? a_->out_features() : 0; }
  vector_parameter& lambda_b() noexcept { return lambda_b_; }
  vector_parameter& lambda_d() noexcept { return lambda_d_; }
  /// The frozen slices A_s ([r, in]) and B_s ([out, r]).
  auto& projection_a() { return a_.value().weight(); }
  auto& projection_b() { return b_.value().weight(); }

 private:
  void require_projections() const {
    if (a_->weight().value.empty() || b_->weight().value.empty())
      throw error(peft::detail::concat("vera on '", name(), "': the shared projections vera_A / vera_B are not set; a model "
                                       "sets them once it is built (peft::prepare_methods), or an adapter file does"));
  }
  void accumulate(typename B::context& ctx, const tensor& upstream, const tensor& activation, tensor& grad) {
    B::multiply(ctx, upstream, activation, product_);
    B::sum_rows(ctx, product_, value_type(1), grad);
  }
  /// W += sign * diag(λ_b) B_s diag(λ_d) A_s, the small out x r factor scaled on the host.
  void fold(typename B::context& ctx, value_type sign) {
    require_projections();
    const std::size_t out = b_->out_features(), r = rank();
    const auto b = B::copy_to_host(ctx, b_->weight().value);
    const auto lb = B::copy_to_host(ctx, lambda_b_.value), ld = B::copy_to_host(ctx, lambda_d_.value);
    std::vector<value_type> scaled(out * r);
    for (std::size_t i = 0; i < out; ++i)
      for (std::size_t k = 0; k < r; ++k) scaled[i * r + k] = lb[i] * b[i * r + k] * ld[k];
    tensor factor;
    B::copy_from_host(ctx, scaled, shape{out, r}, factor);
    B::gemm(ctx, op::n, op::n, sign, factor, a_->weight().value, value_type(1), base_linear().weight().dense_value(ctx));
  }
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    self.inner_.visit_parameters(prefix, f);
    if (!self.a_) return;
    f(prefix + "vera_lambda_b", self.lambda_b_);
    f(prefix + "vera_lambda_d", self.lambda_d_);
    f(prefix + "vera_A", self.a_->weight());
    f(prefix + "vera_B", self.b_->weight());
  }

  layers::dropout<B> dropout_;
  std::optional<projection_layer> a_, b_;
  vector_parameter lambda_b_, lambda_d_;
  bool merged_ = false;
  const tensor* h_ = nullptr;  // A_s x_d
  const tensor* u_ = nullptr;  // B_s (λ_d ⊙ A_s x_d)
  tensor hd_, y_, du_, dh_, dx_, product_;
};

namespace detail {
/// The shared matrices' names in PEFT's files (outside `base_model.model.`).
inline constexpr std::string_view vera_a_key = "base_model.vera_A";
inline constexpr std::string_view vera_b_key = "base_model.vera_B";

/// Which shared matrix the frozen VeRA parameter `name` slices: 'A', 'B', or 0 for none.
inline char vera_projection_of(const std::string& name) {
  return name.ends_with(".vera_A") || name == "vera_A" ? 'A' : name.ends_with(".vera_B") || name == "vera_B" ? 'B' : 0;
}

/// VeRA in Hugging Face PEFT's files: `peft_type` VERA, `VeraConfig`'s keys, tensors
/// `<module>.vera_lambda_b` / `.vera_lambda_d`, and the shared matrices once, as `base_model.vera_A`
/// ([r, max_in]) and `base_model.vera_B` ([max_out, r]) (PEFT's `save_projection`, always written).
struct vera_peft_format {
  static constexpr std::string_view peft_type = "VERA";
  /// File tensors that belong to the method as a whole, not to one module.
  static constexpr std::string_view shared_tensors[] = {vera_a_key, vera_b_key};

  static void write_config(nlohmann::json& j, const vera_config& c, const io::adapter_contents& contents) {
    std::set<std::string> modules;
    const std::string suffix = ".vera_lambda_b";
    for (const auto& p : contents.parameters)
      if (const auto m = io::detail::strip_suffix(p, suffix); m.size() < p.size()) modules.insert(m);
    j.update({{"bias", "none"},
              {"d_initial", c.d_initial},
              {"fan_in_fan_out", false},
              {"init_weights", c.init_weights},
              {"layers_pattern", nullptr},
              {"layers_to_transform", nullptr},
              {"projection_prng_key", c.projection_prng_key},
              {"r", c.r},
              {"save_projection", true},
              {"target_modules", modules.empty() ? nlohmann::json(nullptr)
                                                 : io::detail::target_modules_for(modules, contents.linear_modules, {})},
              {"vera_dropout", c.dropout}});
  }

  /// r (PEFT's default 256), target_modules, projection_prng_key, d_initial, vera_dropout,
  /// init_weights. Refused by name: save_projection false (the matrices would have to come from
  /// PyTorch's generator, which is not reproduced here), fan_in_fan_out (Conv1D models), a bias other
  /// than "none", layers_to_transform and layers_pattern.
  static void read_config(const io::json_config& f, vera_config& c) {
    const auto& j = f.json();
    if (f.has("r")) {
      if (!j["r"].is_number_unsigned() || j["r"].get<std::size_t>() == 0)
        f.fail("'r' must be a positive integer, got " + j["r"].dump());
      c.r = j["r"].get<std::size_t>();
    }
    if (f.has("projection_prng_key")) {
      if (!j["projection_prng_key"].is_number_unsigned())
        f.fail("'projection_prng_key' must be a non-negative integer, got " + j["projection_prng_key"].dump());
      c.projection_prng_key = j["projection_prng_key"].get<std::uint64_t>();
    }
    f.read("d_initial", c.d_initial);
    f.read("vera_dropout", c.dropout);
    f.read("init_weights", c.init_weights);
    if (const auto t = io::detail::read_module_selection(f, "target_modules", io::detail::suffix_match::dotted)) c.target_modules = *t;
    bool save_projection = true, transposed = false;
    f.read("save_projection", save_projection);
    if (!save_projection)
      f.fail("'save_projection': false (the shared matrices are not in the file, and PyTorch's generator that would "
             "redraw them is not reproduced here; save the adapter with save_projection=True)");
    f.read("fan_in_fan_out", transposed);
    if (transposed) f.fail("'fan_in_fan_out': true (Conv1D weights, GPT-2 style) is not supported");
    if (f.has("bias") && !(j["bias"].is_string() && j["bias"].get<std::string>() == "none"))
      f.fail("'bias' " + j["bias"].dump() + " is not supported (only \"none\"; combine with BitFit to train biases)");
    for (const char* key : {"layers_to_transform", "layers_pattern"})
      if (f.has(key)) f.fail(std::string("'") + key + "' is not supported for VERA; name the modules in target_modules instead");
  }

  /// PEFT's in-memory names carry the adapter name (`vera_lambda_b.default`, `base_model.vera_A.default`).
  static std::string parameter_name(std::string key) {
    for (const char* s : {".vera_lambda_b", ".vera_lambda_d", ".vera_A", ".vera_B"}) {
      const std::string in_memory = std::string(s) + ".default";
      if (key.ends_with(in_memory))
        return key.substr(0, key.size() - std::string(".default").size());
    }
    return key;
  }

  /// Replaces the layers' slices (`<prefix><module>.vera_A` / `.vera_B`) among `tensors` by the two
  /// shared matrices, rebuilt from them. Throws `error` when two slices disagree where they overlap
  /// (they were not cut from one pair of matrices), and then nothing is written.
  static void pack_tensors(std::vector<io::tensor_to_write>& tensors) {
    struct slice {
      const io::tensor_to_write* t;
      std::size_t rows, cols;
    };
    std::vector<slice> a, b;
    std::vector<io::tensor_to_write> kept;
    for (const auto& t : tensors) {
      const char which = vera_projection_of(t.name);
      if (!which) continue;
      if (t.shape.size() != 2 || t.dtype != io::dtype::F32)
        throw error("vera: slice '" + t.name + "' is not a two-dimensional F32 tensor");
      (which == 'A' ? a : b).push_back({&t, t.shape[0], t.shape[1]});
    }
    if (a.empty() && b.empty()) return;
    std::vector<io::tensor_to_write> shared;
    for (const bool is_a : {true, false}) {
      const auto& slices = is_a ? a : b;
      // A: r rows, the widest slice's columns; B: the tallest slice's rows, r columns.
      std::size_t rows = 0, cols = 0;
      for (const auto& s : slices) rows = std::max(rows, s.rows), cols = std::max(cols, s.cols);
      std::vector<float> values(rows * cols, 0.0f);
      std::vector<const io::tensor_to_write*> owner(rows * cols, nullptr);
      for (const auto& s : slices) {
        if ((is_a ? s.rows : s.cols) != (is_a ? rows : cols))
          throw error("vera: slice '" + s.t->name + "' has rank " + std::to_string(is_a ? s.rows : s.cols) +
                      " but another has " + std::to_string(is_a ? rows : cols));
        for (std::size_t i = 0; i < s.rows; ++i)
          for (std::size_t k = 0; k < s.cols; ++k) {
            float v;
            std::memcpy(&v, s.t->data.data() + 4 * (i * s.cols + k), 4);
            const std::size_t at = i * cols + k;
            if (owner[at] && values[at] != v)
              throw error("vera: slices '" + owner[at]->name + "' and '" + s.t->name + "' differ at [" + std::to_string(i) +
                          ", " + std::to_string(k) + "]: they were not cut from one shared matrix, nothing was written");
            values[at] = v;
            owner[at] = s.t;
          }
      }
      shared.push_back(io::tensor_to_write::f32<float>(std::string(is_a ? vera_a_key : vera_b_key), {rows, cols},
                                                      std::span<const float>(values)));
    }
    for (auto& t : tensors)
      if (!vera_projection_of(t.name)) kept.push_back(std::move(t));
    for (auto& t : shared) kept.push_back(std::move(t));
    tensors = std::move(kept);
  }

  /// The value of frozen slice `name` (shape `want`) cut from the file's shared matrix. Throws
  /// `io_error` naming the file and key when the matrix is missing or too small, `numeric_error` when
  /// it holds NaN or infinite values.
  template <class T>
  static std::vector<T> frozen_value(const io::safetensors_file& f, const std::string& name, const shape& want) {
    const char which = vera_projection_of(name);
    const std::string key(which == 'A' ? vera_a_key : vera_b_key);
    const io::tensor_info* t = f.find(key);
    if (!t)
      throw io::io_error("'" + f.source() + "' has no tensor '" + key +
                         "', VeRA's shared matrix (PEFT writes it when save_projection is true)");
    const std::size_t rows = want[0], cols = want[1];
    const bool fits = t->shape.size() == 2 && (which == 'A' ? t->shape[0] == rows && t->shape[1] >= cols
                                                            : t->shape[1] == cols && t->shape[0] >= rows);
    if (!fits)
      throw io::io_error(peft::detail::concat("'", f.source(), "': tensor '", key, "' has shape ", io::detail::shape_str(t->shape),
                                              " but '", name, "' needs ", which == 'A' ? "[r, in] with r = " : "[out, r] with r = ",
                                              which == 'A' ? rows : cols, " and ", which == 'A' ? "in >= " : "out >= ",
                                              which == 'A' ? cols : rows, " (does the adapter's r match?)"));
    io::detail::require_finite(f, *t);
    const auto all = f.read<T>(*t);
    std::vector<T> out(rows * cols);
    const std::size_t stride = t->shape[1];
    for (std::size_t i = 0; i < rows; ++i) std::copy_n(all.begin() + std::ptrdiff_t(i * stride), cols, out.begin() + std::ptrdiff_t(i * cols));
    return out;
  }
};
}  // namespace detail

/// PEFT method: VeRA on the linear layers of the listed roles (at least one). Stage 0, beside LoRA:
/// an additive update of the base weight. `prepare` draws the shared matrices once the model is
/// built (models call it through `prepare_methods`).
template <roles::Role... Targets>
struct vera {
  static_assert(sizeof...(Targets) > 0, "peft::vera<Roles...>: name at least one role, e.g. vera<roles::query, roles::value>");
  static constexpr std::string_view name = "vera";
  static constexpr int stage = 0;
  using options = vera_config;
  using groups = group_set<peft::groups::vera_lambda, peft::groups::vera_projection>;
  using peft_format = detail::vera_peft_format;
  template <class Role>
  static constexpr bool targets = (std::is_same_v<Role, Targets> || ...);
  template <class Role>
  using base_groups = group_set<>;
  template <class Inner>
  using wrap = vera_linear<Inner>;

  /// Draws A ([r, max_in], then B ([max_out, r]) from `projection_prng_key`, each Kaiming-uniform
  /// over its fan-in (bound sqrt(6 / fan_in), as PEFT), and gives every VeRA layer of `model` its
  /// slices. The largest sizes are taken over the layers of this model, as PEFT's are over the modules
  /// it targets; a model with no VeRA layer is left alone.
  template <Module M>
  static void prepare(typename M::backend::context& ctx, M& model, const method_config& cfg) {
    using B = typename M::backend;
    using T = typename B::value_type;
    const vera_config& c = cfg.get<vera_config>();
    std::size_t max_in = 0, max_out = 0, r = 0;
    model.visit_parameters("", [&](const std::string& name, auto& p) {
      if constexpr (std::is_same_v<typename std::remove_cvref_t<decltype(p)>::group, peft::groups::vera_projection>) {
        const shape s = p.stored_shape();
        if (detail::vera_projection_of(name) == 'A') r = s[0], max_in = std::max(max_in, s[1]);
        else max_out = std::max(max_out, s[0]);
      }
    });
    if (r == 0) return;
    init_rng rng(derive_seed(c.projection_prng_key, 0x7E6A'5EED));
    auto draw = [&](std::size_t rows, std::size_t cols, std::size_t fan_in) {
      const double bound = std::sqrt(6.0 / double(fan_in));
      std::vector<T> m(rows * cols);
      for (auto& v : m) v = T(rng.uniform(-bound, bound));
      return m;
    };
    const auto a = draw(r, max_in, max_in);
    const auto b = draw(max_out, r, r);
    model.visit_parameters("", [&](const std::string& name, auto& p) {
      if constexpr (std::is_same_v<typename std::remove_cvref_t<decltype(p)>::group, peft::groups::vera_projection>) {
        const shape s = p.stored_shape();
        const bool is_a = detail::vera_projection_of(name) == 'A';
        std::vector<T> slice(s.size());
        for (std::size_t i = 0; i < s[0]; ++i)
          for (std::size_t k = 0; k < s[1]; ++k) slice[i * s[1] + k] = is_a ? a[i * max_in + k] : b[i * r + k];
        B::copy_from_host(ctx, slice, s, p.value);
      }
    });
  }
};

}  // namespace peft::methods
