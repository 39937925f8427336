#pragma once
/// \file Argument bundles of the backend kernels that take many scalars (activations, update rules).

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <type_traits>

#include "peft/core/config.hpp"

namespace peft {

/// Element-wise nonlinearities every backend implements, forward and backward.
enum class activation { identity, relu, gelu, gelu_tanh, tanh, silu };

/// Name as Hugging Face configs spell it (`hidden_act`): "relu", "gelu", "gelu_new", "tanh", "linear".
constexpr std::string_view to_string(activation a) noexcept {
  switch (a) {
    case activation::identity: return "linear";
    case activation::relu: return "relu";
    case activation::gelu: return "gelu";
    case activation::gelu_tanh: return "gelu_new";
    case activation::tanh: return "tanh";
    case activation::silu: return "silu";
  }
  return "?";
}

/// Which keys each query row of an attention score matrix may see (`masked_softmax`). Scores are
/// rows of `cols` keys; row `r` is query `r % query_rows` of score block `r / query_rows`, and block
/// `b` reads key-mask row `b / blocks_per_mask_row` (a (batch, heads, q, k) layout has
/// `query_rows = q` and `blocks_per_mask_row = heads`). Key `j` is visible to query `i` when the key
/// mask (if any) is non-zero there and, for causal attention, `j <= query_offset + i`: queries sit at
/// absolute positions `query_offset + i` over keys `0 .. cols - 1`, which is what a KV cache needs.
struct softmax_mask {
  std::size_t query_rows = 1;
  std::size_t blocks_per_mask_row = 1;
  bool causal = false;
  std::size_t query_offset = 0;
};

/// Pairing of the dimensions that rotary position embedding (Su et al. 2021) rotates together
/// within a head: `adjacent` rotates (2i, 2i+1), as GGUF files store Llama's Q and K; `half_split`
/// rotates (i, i + d/2), as Hugging Face stores them. The two are the same rotation up to a fixed
/// permutation of the head's dimensions.
enum class rope_pairing { adjacent, half_split };

/// One rotary embedding pass over a (rows, heads * head_dim) tensor whose row `r` is the token at
/// position `position_offset + r % seq_len`. Pair `i` (of `rotary_dims / 2`) of each head turns by
/// angle `pos * theta^(-2i / rotary_dims)`; dimensions from `rotary_dims` on pass through. `inverse`
/// turns by the opposite angle: the rotation is orthogonal, so that is also its backward pass.
struct rotary_args {
  std::size_t heads;
  std::size_t head_dim;
  std::size_t rotary_dims;
  std::size_t seq_len;
  std::size_t position_offset;
  double theta;
  rope_pairing pairing;
  bool inverse;
};

/// The activation a Hugging Face config names (`hidden_act`, `hidden_activation`): gelu (erf),
/// gelu_new / gelu_pytorch_tanh / gelu_fast (tanh approximation), relu, tanh, silu / swish, linear.
constexpr std::optional<activation> activation_from_name(std::string_view name) noexcept {
  if (name == "gelu") return activation::gelu;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return activation::gelu_tanh;
  if (name == "relu") return activation::relu;
  if (name == "tanh") return activation::tanh;
  if (name == "silu" || name == "swish") return activation::silu;
  if (name == "linear" || name == "identity") return activation::identity;
  return std::nullopt;
}
/// The names `activation_from_name` accepts, for messages.
inline constexpr const char* supported_activation_names =
    "gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu, tanh, silu, swish, linear";

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

  /// A batch of mutable matrices reads as a batch of constant ones.
  template <class Other>
    requires(std::is_convertible_v<Pointer, Other> && !std::is_same_v<Pointer, Other>)
  operator matrix_batch<Other>() const {
    return {data, ld, inner, outer};
  }
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
  using std::exp;
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
    case activation::silu: return x / (T(1) + exp(-x));
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
    case activation::silu: {
      const T s = T(1) / (T(1) + exp(-x));
      return s * (T(1) + x * (T(1) - s));
    }
  }
  return T(1);
}
}  // namespace activation_math

}  // namespace peft
