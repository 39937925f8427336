#pragma once
/// \file Stochastic gradient descent with momentum and Nesterov momentum (PyTorch's torch.optim.SGD).

#include "peft/core/backend.hpp"
#include "peft/optim/update_rule.hpp"

namespace peft::optim {

/// SGD. `weight_decay` is L2 (added to the gradient). With momentum m and dampening d:
/// v_1 = g, v_t = m v_{t-1} + (1 - d) g; step = nesterov ? g + m v_t : v_t; w -= lr * step.
struct sgd {
  double lr = 1e-2;
  double momentum = 0;
  double dampening = 0;
  bool nesterov = false;
  double weight_decay = 0;

  template <Backend B>
  struct state {
    typename B::tensor velocity;  // empty without momentum
    template <class F>
    void visit_tensors(F&& f) {
      f("momentum_buffer", velocity);
    }
  };
  template <Backend B>
  state<B> make_state(typename B::context& ctx, const typename B::tensor& w) const {
    state<B> s;
    if (momentum != 0) {
      s.velocity.resize(w.shape());
      B::fill(ctx, s.velocity, typename B::value_type(0));
    }
    return s;
  }
  template <Backend B>
  void apply(typename B::context& ctx, typename B::tensor& w, const typename B::tensor& g, state<B>& s,
             const update_context& u) const {
    B::sgd_update(ctx, w, g, s.velocity, {u.lr, momentum, dampening, nesterov, u.weight_decay, u.step == 1});
  }
};

}  // namespace peft::optim
