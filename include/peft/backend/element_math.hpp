#pragma once
/// \file Element-wise math shared by the eigen and CUDA backends: the per-element steps of the fused
/// update rules (SGD with momentum, AdamW) and the dropout keep test, each written once as a
/// `PEFT_HOST_DEVICE` function object built from the kernel arguments. A backend supplies only the
/// loop (OpenMP over elements, or one CUDA thread per element), so the two cannot drift apart; the
/// xtensor reference keeps its own formulas, which the tests compare against.

#include <cmath>
#include <cstdint>

#include "peft/core/config.hpp"
#include "peft/core/kernel_args.hpp"
#include "peft/core/random.hpp"

namespace peft::element_math {

/// One SGD step on w given gradient g and velocity v (PyTorch's SGD: weight decay added to the
/// gradient, dampening, Nesterov momentum).
template <class T>
struct sgd_step {
  T lr, weight_decay, momentum, keep;  // keep = 1 - dampening
  bool first, nesterov;
  static sgd_step from(const sgd_args& a) {
    return {T(a.lr), T(a.weight_decay), T(a.momentum), T(1 - a.dampening), a.first_step, a.nesterov};
  }
  PEFT_HOST_DEVICE void operator()(T& w, T g, T& v) const {
    const T d = g + weight_decay * w;
    if (momentum == T(0)) {
      w -= lr * d;
      return;
    }
    v = first ? d : momentum * v + keep * d;
    w -= lr * (nesterov ? d + momentum * v : v);
  }
};

/// One AdamW step (Loshchilov & Hutter: decoupled weight decay) with bias-corrected moments.
template <class T>
struct adamw_step {
  T beta1, beta2, bias1, bias2, lr, decay, eps;  // bias_k = 1 - beta_k^step; decay = 1 - lr * weight_decay
  static adamw_step from(const adamw_args& a) {
    return {T(a.beta1), T(a.beta2), T(1 - std::pow(a.beta1, double(a.step))), T(1 - std::pow(a.beta2, double(a.step))),
            T(a.lr), T(1 - a.lr * a.weight_decay), T(a.eps)};
  }
  PEFT_HOST_DEVICE void operator()(T& w, T g, T& m, T& v) const {
    using std::sqrt;
    m = beta1 * m + (T(1) - beta1) * g;
    v = beta2 * v + (T(1) - beta2) * g * g;
    w = w * decay - lr * (m / bias1) / (sqrt(v / bias2) + eps);
  }
};

/// The dropout mask value of element i: 1 / (1 - p) when kept, 0 when dropped, from the
/// counter-based stream (a pure function of seed and index, so every backend draws the same mask).
/// `counter_uniform(seed, offset + i) >= p` is decided on the integer draw k (u = k 2^-53, exactly):
/// u >= p exactly when k >= ceil(p 2^53). Both sides are below 2^53, so the comparison is signed,
/// which AVX2 has (it has no unsigned 64-bit compare): a CPU loop over elements vectorises.
template <class T>
struct dropout_value {
  std::int64_t threshold;  // ceil(p * 2^53)
  T keep_scale;
  std::uint64_t mixed_seed, offset;
  static dropout_value from(T p, std::uint64_t seed, std::uint64_t offset) {
    return {static_cast<std::int64_t>(std::ceil(double(p) * 0x1.0p53)), T(1) / (T(1) - p), splitmix64(seed), offset};
  }
  PEFT_HOST_DEVICE T operator()(std::size_t i) const {
    return static_cast<std::int64_t>(counter_bits53(mixed_seed, offset + i)) >= threshold ? keep_scale : T(0);
  }
};

}  // namespace peft::element_math
