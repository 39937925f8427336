#pragma once
/// \file Adafactor (Shazeer & Stern 2018, arXiv:1804.04235), following Hugging Face transformers'
/// `Adafactor` (the implementation most fine-tuning recipes use).

#include <algorithm>
#include <cmath>

#include "peft/core/backend.hpp"
#include "peft/core/error.hpp"
#include "peft/optim/update_rule.hpp"

namespace peft::optim {

/// Adafactor. For a matrix the second moment is factored into row and column means of g^2 + eps1;
/// vectors keep a full second moment. The update is RMS-clipped at `clip_threshold`.
/// Step size: `lr` when `relative_step` is false, else min(warmup_init ? 1e-6 t : 1e-2, 1/sqrt(t));
/// times max(eps2, RMS(w)) when `scale_parameter`. beta2_t = 1 - t^decay_rate. `beta1` > 0 adds a
/// first moment (off by default, as in the paper). Weight decay is decoupled: w -= wd * step * w.
struct adafactor {
  double lr = 0;  ///< used only when relative_step is false; the optimizer's schedule scales it
  double eps1 = 1e-30;
  double eps2 = 1e-3;
  double clip_threshold = 1.0;
  double decay_rate = -0.8;
  double beta1 = 0;
  double weight_decay = 0;
  bool scale_parameter = true;
  bool relative_step = true;
  bool warmup_init = false;

  template <Backend B>
  struct state {
    typename B::tensor row, col, v, m;
    bool factored = false;  // decided by the parameter's shape, so a restored state keeps it
    template <class F>
    void visit_tensors(F&& f) {
      f("exp_avg_sq_row", row), f("exp_avg_sq_col", col), f("exp_avg_sq", v), f("exp_avg", m);
    }
  };
  template <Backend B>
  state<B> make_state(typename B::context& ctx, const typename B::tensor& w) const {
    if (!relative_step && !(lr > 0))
      throw config_error("adafactor: set lr > 0 or relative_step = true");
    if (relative_step && lr > 0)
      throw config_error("adafactor: lr is ignored with relative_step = true; set one of them");
    state<B> s;
    s.factored = w.shape().rank() >= 2;
    auto zero = [&](typename B::tensor& t, const shape& sh) {
      t.resize(sh);
      B::fill(ctx, t, typename B::value_type(0));
    };
    if (s.factored) {
      zero(s.row, shape{w.rows()});
      zero(s.col, shape{w.cols()});
    } else {
      zero(s.v, w.shape());
    }
    if (beta1 > 0) zero(s.m, w.shape());
    return s;
  }
  template <Backend B>
  void apply(typename B::context& ctx, typename B::tensor& w, const typename B::tensor& g, state<B>& s,
             const update_context& u) const {
    const double t = double(u.step);
    double step_size = u.lr;
    if (relative_step) {
      const double min_step = warmup_init ? 1e-6 * t : 1e-2;
      step_size = std::min(min_step, 1.0 / std::sqrt(t)) * u.lr_scale;
    }
    if (scale_parameter) {
      const double rms = std::sqrt(B::sum_squares(ctx, w) / double(w.size()));
      step_size *= std::max(eps2, rms);
    }
    B::adafactor_update(ctx, w, g, s.row, s.col, s.v, s.m,
                        {step_size, 1.0 - std::pow(t, decay_rate), eps1, clip_threshold, beta1, u.weight_decay,
                         s.factored});
  }
};

}  // namespace peft::optim
