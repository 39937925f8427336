// Update rules against hand-computed values, schedules, clipping, per-group options, and the
// guarantee that frozen parameters get no state.
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <vector>

#include "peft/optim/adafactor.hpp"
#include "peft/optim/adamw.hpp"
#include "peft/methods/lora.hpp"
#include "peft/optim/optimizer.hpp"
#include "peft/optim/schedule.hpp"
#include "peft/optim/sgd.hpp"
#include "support/backends.hpp"

using namespace peft;
using test::cpu_double_backends;

namespace {
/// A minimal `Layer` exposing a trainable matrix (group weight), a trainable vector (group lora_b)
/// and a frozen vector, so update rules can be driven with hand-set gradients.
template <class B>
struct toy_model {
  using backend = B;
  using tensor = typename B::tensor;
  parameter<B, groups::weight, true> w;
  parameter<B, groups::lora_b, true> v;
  parameter<B, groups::bias, false> frozen;

  explicit toy_model(typename B::context& ctx) {
    B::copy_from_host(ctx, std::vector<double>{0.5, -1.0, 2.0, 0.25, -0.75, 1.5}, {2, 3}, w.value);
    B::copy_from_host(ctx, std::vector<double>{1.0, -2.0}, {2}, v.value);
    B::copy_from_host(ctx, std::vector<double>{3.0, 4.0}, {2}, frozen.value);
    w.allocate_grad(ctx);
    v.allocate_grad(ctx);
  }
  void set_grads(typename B::context& ctx, const std::vector<double>& gw, const std::vector<double>& gv) {
    B::copy_from_host(ctx, gw, {2, 3}, w.grad);
    B::copy_from_host(ctx, gv, {2}, v.grad);
  }
  const tensor& forward(typename B::context&, const tensor& x) { return x; }
  const tensor& backward(typename B::context&, const tensor& dy) { return dy; }
  template <class F>
  void visit_parameters(const std::string& p, F&& f) {
    f(p + "w", w);
    f(p + "v", v);
    f(p + "frozen", frozen);
  }
  template <class F>
  void visit_parameters(const std::string& p, F&& f) const {
    f(p + "w", w);
    f(p + "v", v);
    f(p + "frozen", frozen);
  }
};

const std::vector<double> g1w{0.1, -0.2, 0.3, -0.4, 0.5, -0.6}, g2w{-0.3, 0.1, 0.2, 0.6, -0.1, 0.05};
const std::vector<double> g1v{0.7, -0.1}, g2v{0.2, 0.4};

template <class B>
void expect_values(typename B::context& ctx, const typename B::tensor& t, const std::vector<double>& expected,
                   double tol = 1e-12) {
  const auto h = B::copy_to_host(ctx, t);
  BOOST_REQUIRE_EQUAL(h.size(), expected.size());
  for (std::size_t i = 0; i < h.size(); ++i) BOOST_TEST(h[i] == expected[i], boost::test_tools::tolerance(tol));
}

/// Runs two steps of `rule` on the toy model and compares with `reference(w, g, step)` applied
/// element by element in plain doubles (each reference keeps its own state).
template <class B, class Rule, class Ref>
void two_steps(Rule rule, Ref make_reference) {
  typename B::context ctx;
  toy_model<B> m(ctx);
  std::vector<double> w = B::copy_to_host(ctx, m.w.value), v = B::copy_to_host(ctx, m.v.value);
  auto ref_w = make_reference(w.size());
  auto ref_v = make_reference(v.size());
  optim::optimizer opt(m, rule);
  BOOST_TEST(opt.entries().size() == 2u);  // the frozen vector is not there
  for (int step = 1; step <= 2; ++step) {
    const auto& gw = step == 1 ? g1w : g2w;
    const auto& gv = step == 1 ? g1v : g2v;
    m.set_grads(ctx, gw, gv);
    opt.step(ctx);
    ref_w(w, gw, step, /*factored_rows=*/2);
    ref_v(v, gv, step, /*factored_rows=*/0);
    expect_values<B>(ctx, m.w.value, w);
    expect_values<B>(ctx, m.v.value, v);
  }
  BOOST_TEST(opt.states() == 2u);
  expect_values<B>(ctx, m.frozen.value, {3.0, 4.0}, 0.0);
}
}  // namespace

BOOST_AUTO_TEST_SUITE(update_rules)

BOOST_AUTO_TEST_CASE_TEMPLATE(sgd_plain_momentum_nesterov, B, cpu_double_backends) {
  for (double momentum : {0.0, 0.9})
    for (bool nesterov : {false, true}) {
      if (nesterov && momentum == 0) continue;
      const double lr = 0.1, wd = 0.01, damp = 0.0;
      two_steps<B>(optim::sgd{.lr = lr, .momentum = momentum, .dampening = damp, .nesterov = nesterov, .weight_decay = wd},
                   [&](std::size_t n) {
                     return [=, buf = std::vector<double>(n)](std::vector<double>& w, const std::vector<double>& g, int step,
                                                              int) mutable {
                       for (std::size_t i = 0; i < w.size(); ++i) {
                         const double d = g[i] + wd * w[i];
                         if (momentum == 0) {
                           w[i] -= lr * d;
                           continue;
                         }
                         buf[i] = step == 1 ? d : momentum * buf[i] + (1 - damp) * d;
                         w[i] -= lr * (nesterov ? d + momentum * buf[i] : buf[i]);
                       }
                     };
                   });
    }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(adamw_two_steps, B, cpu_double_backends) {
  const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1;
  two_steps<B>(optim::adamw{.lr = lr, .beta1 = b1, .beta2 = b2, .eps = eps, .weight_decay = wd}, [&](std::size_t n) {
    return [=, m = std::vector<double>(n), v = std::vector<double>(n)](std::vector<double>& w, const std::vector<double>& g,
                                                                        int t, int) mutable {
      for (std::size_t i = 0; i < w.size(); ++i) {
        w[i] *= 1 - lr * wd;
        m[i] = b1 * m[i] + (1 - b1) * g[i];
        v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
        const double mh = m[i] / (1 - std::pow(b1, t)), vh = v[i] / (1 - std::pow(b2, t));
        w[i] -= lr * mh / (std::sqrt(vh) + eps);
      }
    };
  });
}

BOOST_AUTO_TEST_CASE(adamw_first_step_by_hand) {
  // With bias correction the first AdamW step moves every weight by lr * sign(g) (plus decay).
  using B = test::eigen_d;
  B::context ctx;
  toy_model<B> m(ctx);
  m.set_grads(ctx, g1w, g1v);
  optim::optimizer opt(m, optim::adamw{.lr = 0.1, .eps = 0, .weight_decay = 0});
  opt.step(ctx);
  expect_values<B>(ctx, m.w.value, {0.4, -0.9, 1.9, 0.35, -0.85, 1.6});
  expect_values<B>(ctx, m.v.value, {0.9, -1.9});
}

BOOST_AUTO_TEST_CASE_TEMPLATE(adafactor_two_steps, B, cpu_double_backends) {
  for (double beta1 : {0.0, 0.9}) {
    const double eps1 = 1e-30, eps2 = 1e-3, clip = 1.0, decay = -0.8, wd = 0.05;
    two_steps<B>(optim::adafactor{.beta1 = beta1, .weight_decay = wd}, [&](std::size_t n) {
      return [=, row = std::vector<double>(2), col = std::vector<double>(3), v = std::vector<double>(n),
              m = std::vector<double>(n)](std::vector<double>& w, const std::vector<double>& g, int t, int rows) mutable {
        const double rel = std::min(1e-2, 1 / std::sqrt(double(t)));
        double rms_w = 0;
        for (double x : w) rms_w += x * x;
        const double lr = rel * std::max(eps2, std::sqrt(rms_w / double(w.size())));
        const double b2t = 1 - std::pow(double(t), decay);
        std::vector<double> u(w.size());
        if (rows > 0) {
          const int cols = int(w.size()) / rows;
          for (int r = 0; r < rows; ++r) {
            double s = 0;
            for (int c = 0; c < cols; ++c) s += g[r * cols + c] * g[r * cols + c] + eps1;
            row[r] = b2t * row[r] + (1 - b2t) * s / cols;
          }
          for (int c = 0; c < cols; ++c) {
            double s = 0;
            for (int r = 0; r < rows; ++r) s += g[r * cols + c] * g[r * cols + c] + eps1;
            col[c] = b2t * col[c] + (1 - b2t) * s / rows;
          }
          double row_mean = 0;
          for (int r = 0; r < rows; ++r) row_mean += row[r] / rows;
          for (int r = 0; r < rows; ++r)
            for (int c = 0; c < cols; ++c)
              u[r * cols + c] = g[r * cols + c] / std::sqrt(row[r] / row_mean) / std::sqrt(col[c]);
        } else {
          for (std::size_t i = 0; i < w.size(); ++i) {
            v[i] = b2t * v[i] + (1 - b2t) * (g[i] * g[i] + eps1);
            u[i] = g[i] / std::sqrt(v[i]);
          }
        }
        double rms_u = 0;
        for (double x : u) rms_u += x * x;
        rms_u = std::sqrt(rms_u / double(u.size()));
        for (std::size_t i = 0; i < w.size(); ++i) {
          double step = u[i] / std::max(1.0, rms_u / clip) * lr;
          if (beta1 > 0) step = m[i] = beta1 * m[i] + (1 - beta1) * step;
          w[i] -= wd * lr * w[i];
          w[i] -= step;
        }
      };
    });
  }
}

BOOST_AUTO_TEST_CASE(adafactor_rejects_contradictory_settings) {
  using B = test::eigen_d;
  B::context ctx;
  toy_model<B> m(ctx);
  optim::optimizer bad(m, optim::adafactor{.lr = 0.1});  // relative_step is on by default
  BOOST_CHECK_THROW(bad.step(ctx), config_error);
  optim::optimizer bad2(m, optim::adafactor{.lr = 0, .relative_step = false});
  BOOST_CHECK_THROW(bad2.step(ctx), config_error);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(optimizer_mechanics)

BOOST_AUTO_TEST_CASE(schedules_match_transformers) {
  const optim::linear_schedule lin{.warmup_steps = 4, .total_steps = 12};
  BOOST_TEST(lin(0) == 0.0);
  BOOST_TEST(lin(2) == 0.5);
  BOOST_TEST(lin(4) == 1.0);
  BOOST_TEST(lin(8) == 0.5);
  BOOST_TEST(lin(12) == 0.0);
  BOOST_TEST(lin(20) == 0.0);
  const optim::cosine_schedule cos{.warmup_steps = 2, .total_steps = 10};
  BOOST_TEST(cos(1) == 0.5);
  BOOST_TEST(cos(2) == 1.0);
  BOOST_TEST(cos(6) == 0.5, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(cos(10) == 0.0, boost::test_tools::tolerance(1e-12));
  const optim::cosine_schedule floor{.warmup_steps = 0, .total_steps = 10, .min_ratio = 0.1};
  BOOST_TEST(floor(10) == 0.1, boost::test_tools::tolerance(1e-12));
  BOOST_CHECK_THROW((optim::linear_schedule{.warmup_steps = 5, .total_steps = 3}(0)), config_error);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(schedule_scales_the_learning_rate, B, cpu_double_backends) {
  typename B::context ctx;
  toy_model<B> m(ctx);
  optim::optimizer opt(m, optim::sgd{.lr = 1.0}, optim::linear_schedule{.warmup_steps = 2, .total_steps = 4});
  // Step factors: 0, 0.5, 1, 0.5.
  const std::vector<double> factors{0.0, 0.5, 1.0, 0.5};
  double expected = 1.0;  // v[0]
  for (double f : factors) {
    BOOST_TEST(opt.current_lr() == f);
    m.set_grads(ctx, g1w, {1.0, 1.0});
    opt.step(ctx);
    expected -= f;
    BOOST_TEST(B::copy_to_host(ctx, m.v.value)[0] == expected, boost::test_tools::tolerance(1e-12));
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(group_options_scale_lr_and_override_decay, B, cpu_double_backends) {
  typename B::context ctx;
  toy_model<B> m(ctx);
  optim::optimizer opt(m, optim::sgd{.lr = 0.1, .weight_decay = 0.5});
  opt.template set_group_options<groups::lora_b>({.lr_multiplier = 16, .weight_decay = 0.0});  // LoRA+ style
  m.set_grads(ctx, g1w, g1v);
  opt.step(ctx);
  expect_values<B>(ctx, m.v.value, {1.0 - 1.6 * 0.7, -2.0 + 1.6 * 0.1});
  expect_values<B>(ctx, m.w.value, {0.5 - 0.1 * (0.1 + 0.25), -1.0 - 0.1 * (-0.2 - 0.5), 2.0 - 0.1 * (0.3 + 1.0),
                                    0.25 - 0.1 * (-0.4 + 0.125), -0.75 - 0.1 * (0.5 - 0.375), 1.5 - 0.1 * (-0.6 + 0.75)});
  BOOST_CHECK_THROW(opt.template set_group_options<groups::weight>({.lr_multiplier = -1}), config_error);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(global_norm_clipping, B, cpu_double_backends) {
  typename B::context ctx;
  toy_model<B> m(ctx);
  optim::optimizer opt(m, optim::sgd{.lr = 0.1});
  m.set_grads(ctx, {3, 0, 0, 0, 0, 0}, {0, 4});
  BOOST_TEST(opt.grad_norm(ctx) == 5.0);
  BOOST_TEST(opt.clip_grad_norm(ctx, 10.0) == 5.0);  // below the limit: unchanged
  expect_values<B>(ctx, m.v.grad, {0, 4});
  BOOST_TEST(opt.clip_grad_norm(ctx, 1.0) == 5.0);
  BOOST_TEST(opt.grad_norm(ctx) == 1.0, boost::test_tools::tolerance(1e-6));
  m.set_grads(ctx, {std::nan(""), 0, 0, 0, 0, 0}, {0, 4});
  try {
    opt.clip_grad_norm(ctx, 1.0);
    BOOST_ERROR("no error for a NaN gradient");
  } catch (const numeric_error& e) {
    BOOST_TEST(std::string(e.what()).find("'w'") != std::string::npos, e.what());
  }
  opt.zero_grad(ctx);
  BOOST_TEST(opt.grad_norm(ctx) == 0.0);
}

BOOST_AUTO_TEST_SUITE_END()
