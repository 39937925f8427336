#pragma once
/// \file AdaLoRA (Zhang et al. 2023, arXiv:2303.10512): LoRA in SVD form whose rank budget is moved,
/// during training, to the layers and directions that matter.
///
/// Each adapted layer adds y += s · P diag(E) Q x with Q = `lora_A` (r x in), E = `lora_E` (r x 1),
/// P = `lora_B` (out x r) and s = lora_alpha / (init_r + 1e-5), as Hugging Face PEFT's `ADALORA`
/// computes it. Training adds (`adalora_allocator`):
/// - the orthogonal regulariser w · mean over matrices of ||Q Qᵀ − I||_F and ||Pᵀ P − I||_F, as a
///   gradient added once per optimizer step;
/// - importance scores per entry, |θ · ∇θ| smoothed by an EMA (sensitivity, beta1) times the EMA of its
///   deviation (uncertainty, beta2), summed per triplet (E_k plus the mean over row k of Q and column k
///   of P);
/// - a budget that falls from Σ init_r to target_r per module on a cubic schedule between `tinit` and
///   `total_step − tfinal`; every `deltaT` steps the lowest-scoring triplets are masked (E_k = 0), and
///   from `total_step − tfinal` on the final mask is kept.
/// The kept triplets are the rank pattern: an adapter file keeps only their rows and columns and names
/// them in `rank_pattern`, as PEFT does.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
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

/// AdaLoRA's run-time options, as PEFT's `AdaLoraConfig`. `init_r`: each module's starting rank;
/// `target_r`: the average rank the budget ends at; `alpha` (`lora_alpha`, PEFT's default 8): the
/// update is scaled by alpha / init_r. The schedule: no masking for `tinit` steps, the budget falls
/// until `total_step − tfinal` (masking every `delta_t` steps), then the final mask holds.
/// `beta1`, `beta2`: the EMA factors of sensitivity and uncertainty; `orth_reg_weight`: the weight of
/// the orthogonal regulariser. `rank_pattern`: a finished run's kept triplets per module (module name ->
/// one flag per triplet of init_r); a module in it is built with only its kept triplets.
/// `target_modules` as LoRA's. `init_lora_weights`: true starts E at zero (the model starts as the
/// base) and P, Q from N(0, 0.02²), as PEFT; false also draws E from N(0, 1), for tests.
struct adalora_config {
  bool enabled = true;  ///< false: no module gets AdaLoRA (a plan compiled with it then trains without)
  std::size_t init_r = 12;
  std::size_t target_r = 8;
  double alpha = 8;
  double dropout = 0.0;
  std::size_t tinit = 0, tfinal = 0, delta_t = 1;
  double beta1 = 0.85, beta2 = 0.85;
  double orth_reg_weight = 0.5;
  std::size_t total_step = 0;  ///< the optimizer steps of the run; the allocator needs it (> 0)
  std::string target_modules{};
  std::map<std::string, std::vector<bool>> rank_pattern{};
  bool init_lora_weights = true;
};

namespace groups {
/// AdaLoRA's trainable P, E and Q.
struct adalora {
  static constexpr std::string_view name = "adalora";
  static constexpr bool method_group = true;
};
/// AdaLoRA's allocation state: the EMAs of importance and the kept-triplet mask (frozen: the
/// allocator, not the optimizer, writes them; saved in training checkpoints, never in adapters).
struct adalora_state {
  static constexpr std::string_view name = "adalora_state";
  static constexpr bool method_group = true;
};
}  // namespace groups

}  // namespace peft

namespace peft::methods {

namespace detail {
inline bool adalora_selects(const adalora_config& c, const std::string& name) {
  return run_time_selects(c.enabled, c.target_modules, name, "adalora");
}
/// The rank module `name` is built with: its kept triplets when `rank_pattern` names it, else init_r.
inline std::size_t adalora_rank(const adalora_config& c, const std::string& name) {
  const auto it = c.rank_pattern.find(name);
  if (it == c.rank_pattern.end()) return c.init_r;
  if (it->second.size() != c.init_r)
    throw config_error(peft::detail::concat("adalora on '", name, "': rank_pattern has ", it->second.size(),
                                            " flags, init_r is ", c.init_r));
  return std::size_t(std::count(it->second.begin(), it->second.end(), true));
}
inline void validate_adalora(const adalora_config& c, const std::string& name) {
  if (c.init_r == 0) throw config_error(peft::detail::concat("adalora on '", name, "': init_r must be positive"));
  if (!(c.alpha > 0) || !std::isfinite(c.alpha))
    throw config_error(peft::detail::concat("adalora on '", name, "': lora_alpha = ", c.alpha, " must be positive"));
  if (!(c.dropout >= 0 && c.dropout < 1))
    throw config_error(peft::detail::concat("adalora on '", name, "': lora_dropout = ", c.dropout, " is outside [0, 1)"));
}
/// The names of a layer's allocation state, after `<module>.adalora_state.`.
inline constexpr std::string_view adalora_state_names[] = {"lora_A.exp_avg_ipt", "lora_A.exp_avg_unc", "lora_E.exp_avg_ipt",
                                                           "lora_E.exp_avg_unc", "lora_B.exp_avg_ipt", "lora_B.exp_avg_unc",
                                                           "rank_mask"};
}  // namespace detail

/// A linear layer (`Inner`) with an AdaLoRA update. Parameters: the inner ones, then `lora_A.weight`
/// (Q, r x in), `lora_B.weight` (P, out x r) and `lora_E` (r x 1), trainable (group `adalora`), and
/// the allocation state `adalora_state.*` (frozen, group `adalora_state`: the EMAs of Q, E and P and
/// `rank_mask`, one flag per triplet). Mergeable: `merge` adds s · P diag(E) Q to the base weight.
template <class Inner>
class adalora_linear : public linear_wrapper<Inner>, public visits_parameters<adalora_linear<Inner>> {
  friend visits_parameters<adalora_linear>;
  using linear_wrapper<Inner>::inner_;

 public:
  using backend = typename Inner::backend;
  using B = backend;
  using linear_wrapper<Inner>::name;
  using linear_wrapper<Inner>::base_linear;
  using tensor = typename B::tensor;
  using value_type = typename B::value_type;
  using factor_layer = layers::linear<B, group_set<groups::adalora>, groups::adalora, groups::adalora>;
  using value_parameter = parameter<B, groups::adalora, true>;
  using state_parameter = parameter<B, groups::adalora_state, false>;

  adalora_linear(typename B::context& ctx, const layers::linear_options& o, const method_config& cfg)
      : linear_wrapper<Inner>(ctx, o, cfg) {
    const adalora_config& c = cfg.get<adalora_config>();
    if (!detail::adalora_selects(c, o.name)) return;  // left out at run time: the layer passes through
    detail::validate_adalora(c, o.name);
    const std::size_t r = detail::adalora_rank(c, o.name);
    if (r == 0) return;  // every triplet was pruned: the layer is its base
    dropout_ = layers::dropout<B>(c.dropout, o.name + ".lora_dropout");
    scaling_ = c.alpha / (double(c.init_r) + 1e-5);  // PEFT: lora_alpha / (ranknum + 1e-5), ranknum = init_r
    a_.emplace(ctx, layers::linear_options{.in_features = o.in_features, .out_features = r, .bias = false,
                                           .name = o.name + ".lora_A", .seed = derive_seed(o.seed, 0xADA1),
                                           .init = layers::weight_init::normal, .init_std = 0.02});
    b_.emplace(ctx, layers::linear_options{.in_features = r, .out_features = o.out_features, .bias = false,
                                           .name = o.name + ".lora_B", .seed = derive_seed(o.seed, 0xADA2),
                                           .init = layers::weight_init::normal, .init_std = 0.02});
    init_rng rng(derive_seed(o.seed, 0xADA3));
    layers::detail::init_tensor<B>(ctx, shape{r, 1}, e_.value, [&] { return c.init_lora_weights ? 0.0 : rng.normal(0.0, 1.0); });
    e_.allocate_grad(ctx);
    for (std::size_t i = 0; i < std::size(state_); ++i) {
      const shape s = i < 2 ? shape{r, o.in_features} : i < 4 ? shape{r, 1} : i < 6 ? shape{o.out_features, r} : shape{r};
      layers::detail::init_tensor<B>(ctx, s, state_[i].value, [i] { return i == 6 ? 1.0 : 0.0; });
    }
  }

  const tensor& forward(typename B::context& ctx, const tensor& x) {
    const tensor& base = inner_.forward(ctx, x);
    if (merged_ || !active()) return base;
    h_ = &a_->forward(ctx, dropout_.forward(ctx, x));  // Q x_d, rows x r
    B::copy(ctx, *h_, scaled_h_);
    B::multiply_row_vector(ctx, scaled_h_, e_.value);
    B::scale(ctx, value_type(scaling_), scaled_h_);
    const tensor& l = b_->forward(ctx, scaled_h_);  // s P (E ⊙ Q x_d)
    B::copy(ctx, base, y_);
    B::axpy(ctx, value_type(1), l, y_);
    return y_;
  }
  const tensor& backward(typename B::context& ctx, const tensor& dy) {
    if (!active()) return inner_.backward(ctx, dy);
    if (merged_)
      throw error(peft::detail::concat("adalora on '", name(), "': backward through a merged layer; unmerge before training"));
    if (!h_) throw error(peft::detail::concat("adalora on '", name(), "': backward called before forward"));
    B::copy(ctx, b_->backward(ctx, dy), dh_);  // d(s E ⊙ h), P's gradient accumulated
    B::scale(ctx, value_type(scaling_), dh_);
    B::multiply(ctx, dh_, *h_, product_);  // dE = s Σ_rows d(s E ⊙ h) ⊙ h
    B::sum_rows(ctx, product_, value_type(1), e_.grad);
    B::multiply_row_vector(ctx, dh_, e_.value);  // dh = s E ⊙ d(...)
    const tensor& dx_adapter = dropout_.backward(ctx, a_->backward(ctx, dh_));
    B::copy(ctx, inner_.backward(ctx, dy), dx_);
    B::axpy(ctx, value_type(1), dx_adapter, dx_);
    return dx_;
  }

  /// W += s · P diag(E) Q (after the inner methods merge); the adapter path is then skipped.
  void merge(typename B::context& ctx) {
    merge_if_possible(inner_, ctx);
    if (merged_) throw error(peft::detail::concat("adalora on '", name(), "': already merged"));
    if (active()) fold(ctx, value_type(scaling_));
    merged_ = true;
  }
  /// W −= the same product, restoring the base weight up to rounding.
  void unmerge(typename B::context& ctx) {
    if (!merged_) throw error(peft::detail::concat("adalora on '", name(), "': unmerge without merge"));
    if (active()) fold(ctx, value_type(-scaling_));
    merged_ = false;
    unmerge_if_possible(inner_, ctx);
  }
  [[nodiscard]] bool merged() const noexcept { return merged_; }

  /// Activation elements kept for a step: the inner layer's, the dropout mask and output, the two
  /// factors' buffers, the output, the scaled rank-r activations, their gradient and product, the
  /// input gradient.
  static std::uint64_t activation_elements(const layers::linear_site& s) {
    const std::uint64_t inner = Inner::activation_elements(s);
    const adalora_config& c = s.cfg.get<adalora_config>();
    if (!detail::adalora_selects(c, s.name)) return inner;
    const std::uint64_t rows = s.rows, r = detail::adalora_rank(c, s.name);
    if (r == 0) return inner;
    const std::uint64_t dropout = layers::dropout<B>::activation_elements(rows * s.in, s.training && c.dropout > 0);
    return inner + dropout + rows * (s.in + r) + rows * (r + s.out) + rows * (s.out + 3 * r + s.in);
  }

  /// Whether this module carries AdaLoRA (run-time options or a rank pattern of 0 may leave it out).
  [[nodiscard]] bool active() const noexcept { return a_.has_value(); }
  /// The triplets this module holds (init_r, or its kept ones from a rank pattern).
  [[nodiscard]] std::size_t rank() const noexcept { return a_ ? a_->out_features() : 0; }
  [[nodiscard]] double scaling() const noexcept { return scaling_; }
  factor_layer& lora_A() { return a_.value(); }
  factor_layer& lora_B() { return b_.value(); }
  value_parameter& lora_E() noexcept { return e_; }

 private:
  /// W += f · P diag(E) Q, with diag(E) Q formed on the host (r x in).
  void fold(typename B::context& ctx, value_type f) {
    const std::size_t r = rank(), in = a_->in_features();
    auto q = B::copy_to_host(ctx, a_->weight().value);
    const auto e = B::copy_to_host(ctx, e_.value);
    for (std::size_t k = 0; k < r; ++k)
      for (std::size_t j = 0; j < in; ++j) q[k * in + j] *= e[k];
    tensor eq;
    B::copy_from_host(ctx, q, shape{r, in}, eq);
    B::gemm(ctx, op::n, op::n, f, b_->weight().value, eq, value_type(1), base_linear().weight().dense_value(ctx));
  }
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    self.inner_.visit_parameters(prefix, f);
    if (!self.a_) return;
    self.a_->visit_parameters(prefix + "lora_A.", f);
    self.b_->visit_parameters(prefix + "lora_B.", f);
    f(prefix + "lora_E", self.e_);
    for (std::size_t i = 0; i < std::size(self.state_); ++i)
      f(prefix + "adalora_state." + std::string(detail::adalora_state_names[i]), self.state_[i]);
  }

  double scaling_ = 0;
  layers::dropout<B> dropout_{0.0};
  std::optional<factor_layer> a_, b_;
  value_parameter e_;
  state_parameter state_[7];
  bool merged_ = false;
  const tensor* h_ = nullptr;  // Q x_d
  tensor scaled_h_, y_, dh_, product_, dx_;
};

/// AdaLoRA's training-time work over a whole model: the orthogonal regulariser's gradient before each
/// optimizer step and the importance scores, budget and masks after it (PEFT's `update_and_allocate`).
/// It keeps pointers to the model's AdaLoRA parameters: the model must outlive it and stay where it is.
/// Its state lives in the layers (`adalora_state.*`), so a training checkpoint carries it.
template <Module M>
class adalora_allocator {
 public:
  using B = typename M::backend;
  using T = typename B::value_type;

  /// Validates the schedule (total_step > 0, tinit < total_step − tfinal, delta_t > 0, betas in (0, 1),
  /// orth_reg_weight >= 0) and finds the model's AdaLoRA modules; throws `config_error` naming the option.
  adalora_allocator(M& model, const adalora_config& c) : c_(c) {
    if (c.total_step == 0) throw config_error("adalora: total_step must be the number of optimizer steps of the run (> 0)");
    if (c.tinit >= (c.total_step > c.tfinal ? c.total_step - c.tfinal : 0))
      throw config_error(peft::detail::concat("adalora: tinit (", c.tinit, ") must be below total_step - tfinal (", c.total_step,
                                              " - ", c.tfinal, "): the schedule leaves no budgeting phase"));
    if (c.delta_t == 0) throw config_error("adalora: deltaT must be positive");
    if (!(c.beta1 > 0 && c.beta1 < 1) || !(c.beta2 > 0 && c.beta2 < 1))
      throw config_error(peft::detail::concat("adalora: beta1 (", c.beta1, ") and beta2 (", c.beta2, ") must be in (0, 1)"));
    if (!(c.orth_reg_weight >= 0)) throw config_error(peft::detail::concat("adalora: orth_reg_weight = ", c.orth_reg_weight, " must be >= 0"));
    // Names are `<module>.lora_A.weight`, ... (just `lora_A.weight` for a lone layer).
    auto module_of = [](const std::string& name, const std::string& tail) -> std::optional<std::string> {
      if (name == tail) return std::string();
      if (name.size() > tail.size() + 1 && name.ends_with(tail) && name[name.size() - tail.size() - 1] == '.')
        return name.substr(0, name.size() - tail.size() - 1);
      return std::nullopt;
    };
    model.visit_parameters("", [&](const std::string& name, auto& p) {
      using P = std::remove_cvref_t<decltype(p)>;
      if constexpr (std::is_same_v<typename P::group, groups::adalora>) {
        if (const auto m = module_of(name, "lora_A.weight")) modules_[*m].q = &p;
        if (const auto m = module_of(name, "lora_B.weight")) modules_[*m].p = &p;
        if (const auto m = module_of(name, "lora_E")) modules_[*m].e = &p;
      } else if constexpr (std::is_same_v<typename P::group, groups::adalora_state>) {
        for (std::size_t i = 0; i < std::size(detail::adalora_state_names); ++i)
          if (const auto m = module_of(name, "adalora_state." + std::string(detail::adalora_state_names[i]))) modules_[*m].state[i] = &p;
      }
    });
    for (const auto& [name, m] : modules_) {
      if (!m.q || !m.p || !m.e || std::find(std::begin(m.state), std::end(m.state), nullptr) != std::end(m.state))
        throw error("adalora: module '" + name + "' lacks some of its parameters");
      init_budget_ += m.e->value.size();
    }
    if (modules_.empty()) throw config_error("adalora: the model has no AdaLoRA module");
    target_budget_ = c.target_r * modules_.size();
  }

  /// The budget (total triplets kept) at `step`, and whether the masks are recomputed then.
  [[nodiscard]] std::pair<std::size_t, bool> budget_schedule(std::size_t step) const {
    if (step <= c_.tinit) return {init_budget_, false};
    if (step > c_.total_step - c_.tfinal) return {target_budget_, true};
    const double mul = 1.0 - double(step - c_.tinit) / double(c_.total_step - c_.tfinal - c_.tinit);
    const double budget = (double(init_budget_) - double(target_budget_)) * mul * mul * mul + double(target_budget_);
    return {std::size_t(std::int64_t(budget)), step % c_.delta_t == 0};
  }

  /// Adds the orthogonal regulariser's gradient, w / n Σ ∇||G − I||_F over the n matrices (G = Q Qᵀ
  /// for Q, Pᵀ P for P), to the gradients of Q and P, and returns its value. Call it once per optimizer
  /// step, after the gradients are complete and before the update.
  double regularize(typename B::context& ctx) {
    if (c_.orth_reg_weight == 0) return 0;
    const double w = c_.orth_reg_weight / double(2 * modules_.size());
    double value = 0;
    for (auto& [name, m] : modules_) {
      value += orth_term(ctx, *m.q, false, w) + orth_term(ctx, *m.p, true, w);
    }
    return w * value;
  }

  /// After optimizer step `step` (counted from 0, as PEFT's `update_and_allocate` is called): updates
  /// the importance scores (until total_step − tfinal), masks to the budget when the schedule says
  /// so (at total_step − tfinal the final mask, which later steps keep applying).
  void update_and_allocate(typename B::context& ctx, std::size_t step) {
    const std::size_t final_step = c_.total_step - c_.tfinal;
    if (step < final_step) {
      update_importance(ctx);
      const auto [budget, mask] = budget_schedule(step);
      if (mask) mask_to_budget(ctx, budget);
    } else if (step == final_step) {
      mask_to_budget(ctx, budget_schedule(step).first);
    } else {
      apply_masks(ctx);
    }
  }

  /// The kept triplets per module (the current masks): PEFT's `rank_pattern`.
  [[nodiscard]] std::map<std::string, std::vector<bool>> rank_pattern(typename B::context& ctx) const {
    std::map<std::string, std::vector<bool>> out;
    for (const auto& [name, m] : modules_) {
      const auto mask = B::copy_to_host(ctx, m.state[6]->value);
      for (const auto v : mask) out[name].push_back(v != T(0));
    }
    return out;
  }
  [[nodiscard]] std::size_t initial_budget() const noexcept { return init_budget_; }
  [[nodiscard]] std::size_t target_budget() const noexcept { return target_budget_; }

 private:
  using value_parameter = parameter<B, groups::adalora, true>;
  using state_parameter = parameter<B, groups::adalora_state, false>;
  struct module {
    value_parameter *q = nullptr, *p = nullptr, *e = nullptr;
    state_parameter* state[7] = {};  // EMAs of Q, E, P (sensitivity, uncertainty), then the mask
  };

  /// Adds w ∇||G − I||_F to the gradient of `x` (Q, or P when `columns`) and returns ||G − I||_F.
  double orth_term(typename B::context& ctx, value_parameter& x, bool columns, double w) {
    const auto v = B::copy_to_host(ctx, x.value);
    const std::size_t rows = x.value.rows(), cols = x.value.cols();
    const std::size_t r = columns ? cols : rows, len = columns ? rows : cols;
    auto at = [&](std::size_t k, std::size_t j) { return double(columns ? v[j * cols + k] : v[k * cols + j]); };
    std::vector<double> d(r * r);
    double norm2 = 0;
    for (std::size_t a = 0; a < r; ++a)
      for (std::size_t b = 0; b < r; ++b) {
        double s = 0;
        for (std::size_t j = 0; j < len; ++j) s += at(a, j) * at(b, j);
        d[a * r + b] = s - (a == b ? 1.0 : 0.0);
        norm2 += d[a * r + b] * d[a * r + b];
      }
    const double norm = std::sqrt(norm2);
    if (norm == 0) return 0;
    // d||D||_F / dX = 2 D X / ||D|| (rows of Q), 2 X D / ||D|| (columns of P); D is symmetric.
    auto g = B::copy_to_host(ctx, x.grad);
    for (std::size_t k = 0; k < r; ++k)
      for (std::size_t j = 0; j < len; ++j) {
        double s = 0;
        for (std::size_t b = 0; b < r; ++b) s += d[k * r + b] * at(b, j);
        g[columns ? j * cols + k : k * cols + j] += T(w * 2 * s / norm);
      }
    B::copy_from_host(ctx, g, x.grad.shape(), x.grad);
    return norm;
  }

  /// EMAs of |θ ∇θ| (sensitivity) and of its deviation from that EMA (uncertainty), entry by entry.
  void update_importance(typename B::context& ctx) {
    for (auto& [name, m] : modules_) {
      value_parameter* values[3] = {m.q, m.e, m.p};
      for (std::size_t i = 0; i < 3; ++i) {
        const auto v = B::copy_to_host(ctx, values[i]->value), g = B::copy_to_host(ctx, values[i]->grad);
        auto ipt = B::copy_to_host(ctx, m.state[2 * i]->value), unc = B::copy_to_host(ctx, m.state[2 * i + 1]->value);
        for (std::size_t k = 0; k < v.size(); ++k) {
          const double now = std::abs(double(v[k]) * double(g[k]));
          const double avg = c_.beta1 * double(ipt[k]) + (1 - c_.beta1) * now;
          ipt[k] = T(avg);
          unc[k] = T(c_.beta2 * double(unc[k]) + (1 - c_.beta2) * std::abs(now - avg));
        }
        B::copy_from_host(ctx, ipt, m.state[2 * i]->value.shape(), m.state[2 * i]->value);
        B::copy_from_host(ctx, unc, m.state[2 * i + 1]->value.shape(), m.state[2 * i + 1]->value);
      }
    }
  }

  /// Each triplet's score: E_k's, plus the mean over row k of Q's and over column k of P's, each entry
  /// scored sensitivity × uncertainty.
  std::vector<double> triplet_scores(typename B::context& ctx, const module& m) const {
    auto score = [&](std::size_t i) {
      const auto ipt = B::copy_to_host(ctx, m.state[2 * i]->value), unc = B::copy_to_host(ctx, m.state[2 * i + 1]->value);
      std::vector<double> s(ipt.size());
      for (std::size_t k = 0; k < s.size(); ++k) s[k] = double(ipt[k]) * double(unc[k]);
      return s;
    };
    const std::size_t r = m.e->value.size(), in = m.q->value.cols(), out = m.p->value.rows();
    const auto q = score(0), e = score(1), p = score(2);
    std::vector<double> t(r);
    for (std::size_t k = 0; k < r; ++k) {
      double qs = 0, ps = 0;
      for (std::size_t j = 0; j < in; ++j) qs += q[k * in + j];
      for (std::size_t i = 0; i < out; ++i) ps += p[i * r + k];
      t[k] = e[k] + qs / double(in) + ps / double(out);
    }
    return t;
  }

  /// Masks every triplet scoring at or below the (Σ r − budget)-th smallest score: E_k = 0, flag 0.
  void mask_to_budget(typename B::context& ctx, std::size_t budget) {
    std::map<std::string, std::vector<double>> scores;
    std::vector<double> all;
    for (const auto& [name, m] : modules_) {
      scores[name] = triplet_scores(ctx, m);
      all.insert(all.end(), scores[name].begin(), scores[name].end());
    }
    const std::size_t k = init_budget_ > budget ? init_budget_ - budget : 0;
    if (k == 0) return;
    std::nth_element(all.begin(), all.begin() + std::ptrdiff_t(std::min(k, all.size()) - 1), all.end());
    const double threshold = all[std::min(k, all.size()) - 1];
    for (auto& [name, m] : modules_) {
      const auto& s = scores[name];
      std::vector<T> mask(s.size());
      for (std::size_t i = 0; i < s.size(); ++i) mask[i] = s[i] <= threshold ? T(0) : T(1);
      B::copy_from_host(ctx, mask, m.state[6]->value.shape(), m.state[6]->value);
    }
    apply_masks(ctx);
  }
  /// E_k = 0 wherever the mask says so.
  void apply_masks(typename B::context& ctx) {
    for (auto& [name, m] : modules_) {
      const auto mask = B::copy_to_host(ctx, m.state[6]->value);
      auto e = B::copy_to_host(ctx, m.e->value);
      for (std::size_t k = 0; k < e.size(); ++k)
        if (mask[k] == T(0)) e[k] = T(0);
      B::copy_from_host(ctx, e, m.e->value.shape(), m.e->value);
    }
  }

  adalora_config c_;
  std::map<std::string, module> modules_;
  std::size_t init_budget_ = 0, target_budget_ = 0;
};

namespace detail {
/// AdaLoRA in Hugging Face PEFT's files: `peft_type` ADALORA, `AdaLoraConfig`'s keys, tensors
/// `<module>.lora_A` ([r, in]), `.lora_B` ([out, r]), `.lora_E` ([r, 1]) with only the kept triplets,
/// and `rank_pattern` (keys `<module>.lora_E`, one flag per triplet of init_r).
struct adalora_peft_format {
  static constexpr std::string_view peft_type = "ADALORA";

  static void write_config(nlohmann::json& j, const adalora_config& c, const io::adapter_contents& contents) {
    std::set<std::string> modules;
    const std::string suffix = ".lora_E";
    for (const auto& p : contents.parameters)
      if (const auto m = io::detail::strip_suffix(p, suffix); m.size() < p.size()) modules.insert(m);
    j.update({{"beta1", c.beta1},
              {"beta2", c.beta2},
              {"bias", "none"},
              {"deltaT", c.delta_t},
              {"fan_in_fan_out", false},
              {"init_lora_weights", c.init_lora_weights},
              {"init_r", c.init_r},
              {"layers_pattern", nullptr},
              {"layers_to_transform", nullptr},
              {"lora_alpha", c.alpha},
              {"lora_dropout", c.dropout},
              {"orth_reg_weight", c.orth_reg_weight},
              {"r", 8},  // LoraConfig's r, unused by AdaLoRA (PEFT warns when it is not its default)
              {"rank_pattern", nullptr},
              {"target_modules", modules.empty() ? nlohmann::json(nullptr)
                                                 : io::detail::target_modules_for(modules, contents.linear_modules, {})},
              {"target_r", c.target_r},
              {"tfinal", c.tfinal},
              {"tinit", c.tinit},
              {"total_step", c.total_step},
              {"use_dora", false},
              {"use_rslora", false}});
    if (c.alpha == double(std::int64_t(c.alpha))) j["lora_alpha"] = std::int64_t(c.alpha);
  }

  /// init_r, target_r, lora_alpha (PEFT's default 8), lora_dropout, tinit, tfinal, deltaT, beta1,
  /// beta2, orth_reg_weight, total_step, target_modules, rank_pattern (a list of booleans of length
  /// init_r per `<module>.lora_E` key, with or without `base_model.model.`). Refused by name: use_dora, use_rslora, fan_in_fan_out, a
  /// bias other than "none", layers_to_transform.
  static void read_config(const io::json_config& f, adalora_config& c) {
    const auto& j = f.json();
    f.read("init_r", c.init_r);
    f.read("target_r", c.target_r);
    c.alpha = 8;
    f.read("lora_alpha", c.alpha);
    f.read("lora_dropout", c.dropout);
    f.read("tinit", c.tinit);
    f.read("tfinal", c.tfinal);
    f.read("deltaT", c.delta_t);
    f.read("beta1", c.beta1);
    f.read("beta2", c.beta2);
    f.read("orth_reg_weight", c.orth_reg_weight);
    f.read("total_step", c.total_step);
    f.read("init_lora_weights", c.init_lora_weights);
    if (c.init_r == 0) f.fail("'init_r' must be positive");
    if (const auto t = io::detail::read_module_selection(f, "target_modules", io::detail::suffix_match::dotted)) c.target_modules = *t;
    for (const char* key : {"use_dora", "use_rslora", "fan_in_fan_out"}) {
      bool on = false;
      f.read(key, on);
      if (on) f.fail(std::string("'") + key + "': true is not supported for ADALORA");
    }
    if (f.has("bias") && !(j["bias"].is_string() && j["bias"].get<std::string>() == "none"))
      f.fail("'bias' " + j["bias"].dump() + " is not supported (only \"none\")");
    if (f.has("layers_to_transform")) f.fail("'layers_to_transform' is not supported for ADALORA; name the modules in target_modules");
    if (f.has("rank_pattern")) {
      const auto& rp = j["rank_pattern"];
      if (!rp.is_object()) f.fail("'rank_pattern' must be an object of module -> list of booleans, got " + rp.dump());
      const std::string prefix = "base_model.model.", suffix = ".lora_E";  // io::peft_key_prefix
      for (auto it = rp.begin(); it != rp.end(); ++it) {
        std::string key = it.key();
        if (key.rfind(prefix, 0) == 0) key = key.substr(prefix.size());
        const std::string module = io::detail::strip_suffix(key, suffix);
        if (module.size() == key.size() || !it.value().is_array() ||
            !std::all_of(it.value().begin(), it.value().end(), [](const auto& v) { return v.is_boolean(); }) ||
            it.value().size() != c.init_r)
          f.fail(peft::detail::concat("'rank_pattern': entry '", it.key(), "' must be '<module>.lora_E' with a list of ", c.init_r,
                                      " booleans (init_r), got ", it.value().dump()));
        c.rank_pattern[module] = it.value().get<std::vector<bool>>();
      }
    }
  }

  /// PEFT's in-memory names carry the adapter name (`lora_A.default`); in files A, B and E have no
  /// `.weight` suffix, which this layer's names have for A and B.
  static std::string parameter_name(std::string key) {
    for (const char* s : {".lora_A", ".lora_B"}) {
      for (const std::string& tail : {std::string(s), std::string(s) + ".default"})
        if (key.ends_with(tail))
          return key.substr(0, key.size() - tail.size()) + s + ".weight";
    }
    const std::string e = ".lora_E.default";
    if (key.ends_with(e)) return key.substr(0, key.size() - 8);
    return key;
  }

  /// Writes PEFT's layout: each module's kept triplets only (rows of A and E, columns of B, by its
  /// `rank_mask`), A and B without `.weight`, no allocation state, and the rank pattern in `config`.
  static void pack_tensors(std::vector<io::tensor_to_write>& tensors, nlohmann::json& config) {
    const std::string state = ".adalora_state.", mask_suffix = ".adalora_state.rank_mask";
    std::map<std::string, std::vector<bool>> keep;
    for (const auto& t : tensors)
      if (t.name.ends_with(mask_suffix)) {
        std::vector<bool> k(t.shape.empty() ? 0 : t.shape[0]);
        for (std::size_t i = 0; i < k.size(); ++i) {
          float v;
          std::memcpy(&v, t.data.data() + 4 * i, 4);
          k[i] = v != 0.0f;
        }
        keep[t.name.substr(0, t.name.size() - mask_suffix.size())] = std::move(k);
      }
    if (keep.empty()) return;
    std::vector<io::tensor_to_write> out;
    nlohmann::json pattern = nlohmann::json::object();
    bool pruned = false;
    for (auto& t : tensors) {
      if (t.name.find(state) != std::string::npos) continue;
      const auto module_of = [&](const std::string& tail) -> std::string {
        return t.name.ends_with(tail) ? t.name.substr(0, t.name.size() - tail.size()) : std::string();
      };
      const std::string a = module_of(".lora_A.weight"), b = module_of(".lora_B.weight"), e = module_of(".lora_E");
      const std::string& m = !a.empty() ? a : !b.empty() ? b : e;
      const auto it = keep.find(m);
      if (m.empty() || it == keep.end()) {
        out.push_back(std::move(t));
        continue;
      }
      const auto& k = it->second;
      const std::size_t kept = std::size_t(std::count(k.begin(), k.end(), true));
      pruned = pruned || kept < k.size();
      const bool by_column = !b.empty();  // B: out x r, keep columns; A, E: keep rows
      const std::size_t rows = t.shape[0], cols = t.shape[1];
      const std::vector<std::size_t> shape = by_column ? std::vector<std::size_t>{rows, kept} : std::vector<std::size_t>{kept, cols};
      std::vector<float> v;
      for (std::size_t i = 0; i < rows; ++i)
        for (std::size_t j = 0; j < cols; ++j)
          if (k[by_column ? j : i]) {
            float x;
            std::memcpy(&x, t.data.data() + 4 * (i * cols + j), 4);
            v.push_back(x);
          }
      out.push_back(io::tensor_to_write::f32<float>(!a.empty() ? m + ".lora_A" : !b.empty() ? m + ".lora_B" : t.name, shape,
                                                    std::span<const float>(v)));
      // PEFT names the pattern by the model's own parameter names (no `base_model.model.`).
      const std::string prefix = "base_model.model.";
      if (!e.empty()) pattern[(m.rfind(prefix, 0) == 0 ? m.substr(prefix.size()) : m) + ".lora_E"] = k;
    }
    tensors = std::move(out);
    config["rank_pattern"] = pruned ? pattern : nlohmann::json(nullptr);
  }

  /// PEFT writes a module whose every triplet was pruned as empty tensors; such a module has no
  /// parameters here.
  static bool ignores(const io::tensor_info& t) { return t.numel() == 0; }
};
}  // namespace detail

/// PEFT method: AdaLoRA on the linear layers of the listed roles (at least one). Stage 0, beside LoRA.
/// Training needs an `adalora_allocator` over the model, called around each optimizer step.
template <roles::Role... Targets>
struct adalora {
  static_assert(sizeof...(Targets) > 0, "peft::adalora<Roles...>: name at least one role, e.g. adalora<roles::query, roles::value>");
  static constexpr std::string_view name = "adalora";
  static constexpr int stage = 0;
  using options = adalora_config;
  using groups = group_set<peft::groups::adalora, peft::groups::adalora_state>;
  using peft_format = detail::adalora_peft_format;
  template <class Role>
  static constexpr bool targets = (std::is_same_v<Role, Targets> || ...);
  template <class Role>
  using base_groups = group_set<>;
  template <class Inner>
  using wrap = adalora_linear<Inner>;
};

}  // namespace peft::methods
