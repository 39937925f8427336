#pragma once
/// \file AdamW (Loshchilov & Hutter 2019, arXiv:1711.05101), as torch.optim.AdamW computes it.

#include "peft/core/backend.hpp"
#include "peft/optim/update_rule.hpp"

namespace peft::optim {

/// AdamW with bias correction and decoupled weight decay (defaults as PyTorch):
/// w <- w (1 - lr wd); m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2;
/// w <- w - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
struct adamw {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;

  template <Backend B>
  struct state {
    typename B::tensor m, v;
    /// Named state tensors, for saving and restoring (`optimizer::visit_state`).
    template <class F>
    void visit_tensors(F&& f) {
      f("exp_avg", m), f("exp_avg_sq", v);
    }
  };
  template <Backend B>
  state<B> make_state(typename B::context& ctx, const typename B::tensor& w) const {
    state<B> s;
    s.m.resize(w.shape());
    s.v.resize(w.shape());
    B::fill(ctx, s.m, typename B::value_type(0));
    B::fill(ctx, s.v, typename B::value_type(0));
    return s;
  }
  template <Backend B>
  void apply(typename B::context& ctx, typename B::tensor& w, const typename B::tensor& g, state<B>& s,
             const update_context& u) const {
    B::adamw_update(ctx, w, g, s.m, s.v, {u.lr, beta1, beta2, eps, u.weight_decay, u.step});
  }
};

}  // namespace peft::optim
