#pragma once
/// \file Argument bundles of the backend kernels that take many scalars (activations, update rules).

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "peft/core/config.hpp"

namespace peft {

/// Element-wise nonlinearities every backend implements, forward and backward.
enum class activation { identity, relu, gelu, gelu_tanh, tanh };

/// Name as Hugging Face configs spell it (`hidden_act`): "relu", "gelu", "gelu_new", "tanh", "linear".
constexpr std::string_view to_string(activation a) noexcept {
  switch (a) {
    case activation::identity: return "linear";
    case activation::relu: return "relu";
    case activation::gelu: return "gelu";
    case activation::gelu_tanh: return "gelu_new";
    case activation::tanh: return "tanh";
  }
  return "?";
}

/// Transpose flag of a matrix operand of `gemm`.
enum class op { n, t };

/// A two-level batch of row-major matrices inside one buffer, as `gemm_batched` reads them: matrix
/// (o, i) starts at `data + o * outer + i * inner`, and its rows are `ld` elements apart. Attention uses
/// it to address head `i` of sequence `o` inside a (batch, seq, heads * head_dim) tensor without a
/// transpose: `ld = heads * head_dim`, `inner = head_dim`, `outer = seq * heads * head_dim`.
template <class Pointer>
struct matrix_batch {
  Pointer data;
  std::size_t ld;
  std::size_t inner;
  std::size_t outer;
};

/// One SGD step: v = momentum * v + (1 - dampening) * g' (g' = g + wd * w), then
/// w -= lr * (nesterov ? g' + momentum * v : v). On the first step v = g' (PyTorch semantics).
struct sgd_args {
  double lr;
  double momentum;
  double dampening;
  bool nesterov;
  double weight_decay;  // L2, added to the gradient as PyTorch SGD does
  bool first_step;
};

/// One AdamW step (Loshchilov & Hutter) with bias correction and decoupled weight decay:
/// w -= lr * wd * w; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
/// w -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps).
struct adamw_args {
  double lr;
  double beta1;
  double beta2;
  double eps;
  double weight_decay;
  std::int64_t step;  // 1 for the first update
};

/// One Adafactor step (Shazeer & Stern 2018), as Hugging Face transformers implements it.
/// `lr` is the final step size (relative step and parameter scale already applied by the rule);
/// `beta2t` = 1 - t^decay_rate; second moments factored into row/column means for matrices.
struct adafactor_args {
  double lr;
  double beta2t;
  double eps1;            // added to g^2
  double clip_threshold;  // update RMS clip
  double beta1;           // 0 disables the first moment
  double weight_decay;
  bool factored;
};

/// Scalar activation math shared by the eigen and CUDA backends (the xtensor reference has its own).
namespace activation_math {
inline constexpr double sqrt_2_over_pi = 0.7978845608028654;
inline constexpr double inv_sqrt_2 = 0.7071067811865476;
inline constexpr double inv_sqrt_2pi = 0.3989422804014327;

template <class T>
PEFT_HOST_DEVICE T forward(activation a, T x) {
  using std::erf;
  using std::tanh;
  switch (a) {
    case activation::identity: return x;
    case activation::relu: return x > T(0) ? x : T(0);
    case activation::gelu: return T(0.5) * x * (T(1) + erf(x * T(inv_sqrt_2)));
    case activation::gelu_tanh: {
      const T u = T(sqrt_2_over_pi) * (x + T(0.044715) * x * x * x);
      return T(0.5) * x * (T(1) + tanh(u));
    }
    case activation::tanh: return tanh(x);
  }
  return x;
}

/// d forward / dx at x; y = forward(x) is passed in for the activations that reuse it.
template <class T>
PEFT_HOST_DEVICE T derivative(activation a, T x, T y) {
  using std::erf;
  using std::exp;
  using std::tanh;
  switch (a) {
    case activation::identity: return T(1);
    case activation::relu: return x > T(0) ? T(1) : T(0);
    case activation::gelu:
      return T(0.5) * (T(1) + erf(x * T(inv_sqrt_2))) + x * T(inv_sqrt_2pi) * exp(T(-0.5) * x * x);
    case activation::gelu_tanh: {
      const T u = T(sqrt_2_over_pi) * (x + T(0.044715) * x * x * x);
      const T t = tanh(u);
      return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * T(sqrt_2_over_pi) * (T(1) + T(3 * 0.044715) * x * x);
    }
    case activation::tanh: return T(1) - y * y;
  }
  return T(1);
}
}  // namespace activation_math

}  // namespace peft
