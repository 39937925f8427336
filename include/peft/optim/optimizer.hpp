#pragma once
/// \file `peft::optim::optimizer`: applies an update rule to the trainable parameters of a model.

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/core/groups.hpp"
#include "peft/core/layer.hpp"
#include "peft/optim/schedule.hpp"
#include "peft/optim/update_rule.hpp"

namespace peft::optim {

/// Run-time options of a parameter group. `lr_multiplier` scales the learning rate (LoRA+ uses 16
/// on `lora_b`); `weight_decay`, when set, replaces the rule's (0 on biases and norms is common).
struct group_options {
  double lr_multiplier = 1.0;
  std::optional<double> weight_decay{};
};

/// Owns the optimizer state of a model's trainable parameters and updates them.
/// Requirements: `Model` is a `Module` (a layer or a model); `Rule` an `UpdateRule` for its backend; the model outlives
/// the optimizer and is not moved after the optimizer is made (it keeps pointers to parameters).
/// Guarantees: frozen parameters are never visited by `step`, `zero_grad` or clipping and get no
/// state; state is made lazily at the first `step`; a non-finite gradient norm throws and updates
/// nothing.
template <class Model, class Rule, Schedule Sched = constant_schedule>
class optimizer {
  static_assert(Module<Model>, "peft::optim::optimizer: the model must satisfy peft::Module (a backend and visit_parameters; see docs/concepts.md#module)");
  using B = typename Model::backend;
  static_assert(detail::check_update_rule<Rule, B>(), "peft::optim::optimizer: Rule must satisfy UpdateRule");

 public:
  using backend = B;
  using tensor = typename B::tensor;

  /// One trainable parameter as the optimizer sees it.
  struct entry {
    std::string name;
    std::string_view group;
    tensor* value;
    tensor* grad;
    std::optional<typename Rule::template state<B>> state;
  };

  optimizer(Model& model, Rule rule, Sched schedule = {}) : rule_(rule), schedule_(schedule) {
    model.visit_parameters("", [&](const std::string& name, auto& p) {
      if constexpr (std::remove_cvref_t<decltype(p)>::trainable)
        entries_.push_back({name, std::remove_cvref_t<decltype(p)>::group::name, &p.value, &p.grad, std::nullopt});
    });
  }

  /// Sets the options of group `G` (applies from the next step).
  template <groups::Group G>
  void set_group_options(const group_options& o) {
    if (!(o.lr_multiplier >= 0) || (o.weight_decay && !(*o.weight_decay >= 0)))
      throw config_error(peft::detail::concat("optimizer: group '", G::name, "': lr_multiplier (", o.lr_multiplier,
                                              ") and weight_decay must be non-negative"));
    for (auto& g : group_opts_)
      if (g.first == G::name) {
        g.second = o;
        return;
      }
    group_opts_.emplace_back(G::name, o);
  }

  /// Applies one update to every trainable parameter with the current gradients.
  void step(typename B::context& ctx) {
    const double factor = schedule_(step_);
    ++step_;
    for (auto& e : entries_) {
      if (!e.state) e.state.emplace(rule_.template make_state<B>(ctx, *e.grad));  // shaped like the gradient
      const group_options o = options_of(e.group);
      const double scale = factor * o.lr_multiplier;
      rule_.template apply<B>(ctx, *e.value, *e.grad, *e.state,
                              {rule_.lr * scale, scale, o.weight_decay.value_or(rule_.weight_decay), step_});
    }
  }

  /// Sets every trainable gradient to zero.
  void zero_grad(typename B::context& ctx) {
    for (auto& e : entries_) B::fill(ctx, *e.grad, typename B::value_type(0));
  }

  /// Global L2 norm of all trainable gradients.
  double grad_norm(typename B::context& ctx) const {
    double s = 0;
    for (const auto& e : entries_) s += B::sum_squares(ctx, *e.grad);
    return std::sqrt(s);
  }

  /// Multiplies every gradient by `factor` (gradient accumulation averages micro-batches this way).
  void scale_grads(typename B::context& ctx, double factor) {
    for (auto& e : entries_) B::scale(ctx, typename B::value_type(factor), *e.grad);
  }

  /// Scales all gradients so that their global norm is at most `max_norm` (torch's clip_grad_norm_);
  /// returns the norm before clipping. Throws `numeric_error` if it is not finite.
  double clip_grad_norm(typename B::context& ctx, double max_norm) {
    if (!(max_norm > 0)) throw config_error(peft::detail::concat("clip_grad_norm: max_norm = ", max_norm, " must be positive"));
    const double norm = grad_norm(ctx);
    if (!std::isfinite(norm)) {
      std::string worst;
      for (const auto& e : entries_)
        if (!std::isfinite(B::sum_squares(ctx, *e.grad))) {
          worst = e.name;
          break;
        }
      throw numeric_error(peft::detail::concat("clip_grad_norm: gradient norm is not finite (first offending parameter: '",
                                               worst, "')"));
    }
    if (norm > max_norm)
      for (auto& e : entries_) B::scale(ctx, typename B::value_type(max_norm / (norm + 1e-6)), *e.grad);
    return norm;
  }

  /// Makes the state of every trainable parameter now (otherwise made at its first `step`), e.g.
  /// before restoring a saved state.
  void init_state(typename B::context& ctx) {
    for (auto& e : entries_)
      if (!e.state) e.state.emplace(rule_.template make_state<B>(ctx, *e.grad));  // shaped like the gradient
  }
  /// Calls `f(name, tensor&)` for every non-empty state tensor, named `<parameter>.<key>` (keys such as
  /// `exp_avg`, from the rule's `state::visit_tensors`). Parameters without state yet are skipped.
  template <class F>
  void visit_state(F&& f) {
#if !defined(__CUDACC__)  // nvcc 13 wrongly finds this requirement unmet; the call below checks it too
    static_assert(requires(typename Rule::template state<B>& s) { s.visit_tensors([](const char*, tensor&) {}); },
                  "optimizer::visit_state: the rule's state<B> lacks visit_tensors(f)");
#endif
    for (auto& e : entries_)
      if (e.state)
        e.state->visit_tensors([&](const char* key, tensor& t) {
          if (t.size()) f(e.name + "." + key, t);
        });
  }
  /// Sets the count of steps taken (the schedule position and bias corrections), when resuming.
  void set_steps_taken(std::int64_t n) {
    if (n < 0) throw config_error(peft::detail::concat("optimizer: steps taken = ", n, " must be non-negative"));
    step_ = n;
  }
  [[nodiscard]] std::int64_t steps_taken() const noexcept { return step_; }
  /// Learning rate the next step will use for a group with multiplier 1.
  [[nodiscard]] double current_lr() const { return rule_.lr * schedule_(step_); }
  [[nodiscard]] const std::vector<entry>& entries() const noexcept { return entries_; }
  /// Number of parameters (tensors) that have optimizer state.
  [[nodiscard]] std::size_t states() const noexcept {
    std::size_t n = 0;
    for (const auto& e : entries_) n += e.state.has_value();
    return n;
  }
  Rule& rule() noexcept { return rule_; }

 private:
  group_options options_of(std::string_view group) const {
    for (const auto& g : group_opts_)
      if (g.first == group) return g.second;
    return {};
  }

  Rule rule_;
  Sched schedule_;
  std::vector<entry> entries_;
  std::vector<std::pair<std::string_view, group_options>> group_opts_;
  std::int64_t step_ = 0;
};

}  // namespace peft::optim
