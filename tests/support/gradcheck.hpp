#pragma once
// Finite-difference gradient checks for layers on host backends (eigen, xtensor) in double.

#include <cmath>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "peft/core/layer.hpp"
#include "peft/core/random.hpp"
#include "peft/layers/linear.hpp"
#include "support/fixtures.hpp"

namespace peft::test {

/// Zeroes all trainable gradients of `l`.
template <class L>
void zero_grads(typename L::backend::context& ctx, L& l) {
  l.visit_parameters("", [&](const std::string&, auto& p) {
    if constexpr (std::remove_cvref_t<decltype(p)>::trainable) L::backend::fill(ctx, p.grad, 0);
  });
}

/// Checks d(sum(y * R))/d(input) and d/d(theta) for every trainable parameter of `module` against
/// central differences, where y = forward() and R is a fixed random tensor. `backward(R)` must
/// accumulate parameter gradients and return a pointer to d/d(input) (or nullptr when `input` is
/// nullptr). The context's random offset is reset before each forward, so dropout masks are the same
/// in every evaluation. Returns an empty string on success, else the worst offender.
template <class M, class Forward, class Backward>
std::string check_module_gradients(typename M::backend::context& ctx, M& module, Forward&& forward, Backward&& backward,
                                   typename M::backend::tensor* input, double tol = 1e-6, double eps = 1e-6) {
  using B = typename M::backend;
  static_assert(std::is_same_v<typename B::value_type, double>, "gradient checks run in double");
  const std::uint64_t offset = ctx.random_offset;
  auto objective = [&](const typename B::tensor& r) {
    ctx.random_offset = offset;
    const auto& y = forward();
    double s = 0;
    for (std::size_t i = 0; i < y.size(); ++i) s += y[i] * r[i];
    return s;
  };
  ctx.random_offset = offset;
  const auto& y0 = forward();
  const typename B::tensor r = random_tensor<B>(ctx, y0.shape(), 777);
  zero_grads(ctx, module);
  const typename B::tensor* dx_ptr = backward(r);
  const typename B::tensor dx = dx_ptr ? *dx_ptr : typename B::tensor{};

  std::ostringstream worst;
  double worst_err = 0;
  auto check = [&](const std::string& what, double* value, double analytic) {
    const double saved = *value;
    *value = saved + eps;
    const double up = objective(r);
    *value = saved - eps;
    const double down = objective(r);
    *value = saved;
    const double numeric = (up - down) / (2 * eps);
    const double err = std::abs(numeric - analytic) / std::max(1.0, std::abs(numeric) + std::abs(analytic));
    if (err > worst_err) {
      worst_err = err;
      worst.str("");
      worst << what << ": analytic " << analytic << " vs numeric " << numeric << " (rel err " << err << ")";
    }
  };
  if (input)
    for (std::size_t i = 0; i < input->size(); ++i) check("input[" + std::to_string(i) + "]", &(*input)[i], dx[i]);
  module.visit_parameters("", [&](const std::string& name, auto& p) {
    if constexpr (std::remove_cvref_t<decltype(p)>::trainable) {
      const typename B::tensor g = p.grad;  // the objective's forwards do not touch gradients
      for (std::size_t i = 0; i < p.value.size(); ++i) check(name + "[" + std::to_string(i) + "]", &p.value[i], g[i]);
    }
  });
  return worst_err > tol ? worst.str() : std::string{};
}

/// `check_module_gradients` for a `Layer` on input `x0`.
template <class L>
std::string check_gradients(typename L::backend::context& ctx, L& l, const typename L::backend::tensor& x0,
                            double tol = 1e-6, double eps = 1e-6) {
  typename L::backend::tensor x = x0;
  return check_module_gradients(
      ctx, l, [&]() -> const auto& { return l.forward(ctx, x); }, [&](const auto& dy) { return &l.backward(ctx, dy); },
      &x, tol, eps);
}

/// `check_module_gradients` for a model whose input is not a tensor (`forward(ctx, batch)`, e.g. token
/// ids): parameter gradients only.
template <class M, class Input>
std::string check_model_gradients(typename M::backend::context& ctx, M& m, const Input& input, double tol = 1e-6,
                                  double eps = 1e-6) {
  return check_module_gradients(
      ctx, m, [&]() -> const auto& { return m.forward(ctx, input); },
      [&](const auto& dy) -> const typename M::backend::tensor* {
        m.backward(ctx, dy);
        return nullptr;
      },
      nullptr, tol, eps);
}

}  // namespace peft::test
