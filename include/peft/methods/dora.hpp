#pragma once
/// \file DoRA (Liu et al. 2024, arXiv:2402.09353): weight-decomposed low-rank adaptation.
///
/// The adapted weight is split into a magnitude and a direction,
///   W' = diag(m / ||W + s B A||_row) (W + s B A),
/// where the norm is over each output row (Hugging Face PEFT's `lora_magnitude_vector`, one entry per
/// output feature) and, as the paper's section 4.3 and PEFT do, is treated as a constant in the
/// gradient. With g = m / ||W + s B A||, x_d = dropout(x) and b the base bias, a layer computes
///   y = W x + b + (g - 1) ⊙ (W x_d) + g ⊙ (s B A x_d),
/// which without dropout is y = g ⊙ (W x + s B A x) + b: PEFT's forward, term for term. The LoRA
/// layer (methods/lora.hpp) owns A, B and the dropout; this header owns m and the norm.
///
/// The row norms are computed without forming W + s B A:
///   ||W_i + s (BA)_i||^2 = ||W_i||^2 + Σ_k B_ik (2 s W A^T + s^2 B A A^T)_ik,
/// an (out x in x r) product instead of an (out x in) temporary, which also works for a frozen
/// weight kept packed (bf16, quantized). ||W_i||^2 is one more pass over a dense W at every update
/// (so a weight replaced after the first forward is seen); a packed weight's is measured once per
/// packed matrix.

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "peft/core/backend.hpp"
#include "peft/core/error.hpp"
#include "peft/core/groups.hpp"
#include "peft/core/packed_matrix.hpp"
#include "peft/core/parameter.hpp"

namespace peft::groups {
/// DoRA's magnitude vector (one entry per output feature).
struct lora_magnitude {
  static constexpr std::string_view name = "lora_magnitude";
  static constexpr bool method_group = true;
};
}  // namespace peft::groups

namespace peft::methods {

/// DoRA's magnitude `m` ([out], group `lora_magnitude`, trainable) and the per-row scale
/// g = m / ||W + s B A|| of one LoRA layer. Requirements: `Linear` is the layer's innermost
/// `layers::linear` (dense or packed weight). Guarantees:
/// - `m` starts empty and is set to ||W + s B A|| by the first `update_scale` (forward or merge) unless
///   a loader filled it first, so the layer starts as the base model (g = 1), as PEFT's does, and the
///   magnitude is measured on the loaded base weight, not the random one a model is built with;
/// - ||W||^2 is measured at every update for a dense W; for a packed W once per packed matrix (a
///   new one, told apart by its bytes, is measured again);
/// - the steady state allocates nothing (every buffer keeps its capacity).
template <Backend B>
class dora_magnitude {
 public:
  using tensor = typename B::tensor;
  using value_type = typename B::value_type;
  using magnitude_parameter = parameter<B, groups::lora_magnitude, true>;

  dora_magnitude(typename B::context& ctx, std::size_t out_features, std::size_t r, std::string name)
      : out_(out_features), r_(r), name_(std::move(name)) {
    magnitude_.declared = shape{out_features};
    magnitude_.allocate_grad(ctx);
    init_constant(ctx, shape{r, 1}, 1.0, ones_r_);
  }

  /// Computes ||W + s B A|| per row and g = m / norm (setting m first when it is empty); keeps the
  /// norm of the previous call instead while `hold_norm` is set.
  template <class Linear>
  void update_scale(typename B::context& ctx, const Linear& base, const tensor& a, const tensor& b, double s) {
    if (!hold_ || norm_.empty()) measure_norm(ctx, base, a, b, s);
    apply_magnitude(ctx);
  }

  /// y = base + (g - 1) ⊙ W x_d + g ⊙ l for the LoRA output `l` = s B A x_d. `direct` (no dropout at
  /// work, W and b frozen: x_d = x) computes it as g ⊙ (base + l) + (1 - g) ⊙ b from the base
  /// output alone; otherwise W x_d is one more product with the weight.
  template <class Linear>
  const tensor& forward(typename B::context& ctx, const Linear& base, const tensor& x_d, const tensor& base_out,
                        const tensor& l, bool direct) {
    direct_ = direct;
    x_d_ = &x_d;
    if (direct) {  // t = base + l (W x + b + l)
      B::copy(ctx, base_out, t_);
      B::axpy(ctx, value_type(1), l, t_);
      B::copy(ctx, t_, y_);
      B::multiply_row_vector(ctx, y_, scale_);
      if (base.has_bias()) {  // + (1 - g) ⊙ b
        B::multiply(ctx, scale_minus_one_, base.bias().value, vector_);
        B::scale(ctx, value_type(-1), vector_);
        B::add_row_vector(ctx, y_, vector_);
      }
      return y_;
    }
    product_with_weight(ctx, base, op::t, x_d, w_x_d_);  // W x_d
    B::copy(ctx, w_x_d_, t_);                            // t = W x_d + l
    B::axpy(ctx, value_type(1), l, t_);
    B::copy(ctx, t_, y_);
    B::multiply_row_vector(ctx, y_, scale_);  // g ⊙ t - W x_d + base
    B::axpy(ctx, value_type(-1), w_x_d_, y_);
    B::axpy(ctx, value_type(1), base_out, y_);
    return y_;
  }

  /// Adds dL/dm = Σ_rows dy ⊙ (W x_d + l) / norm to m's gradient and returns g ⊙ dy, the gradient at
  /// the LoRA output (and, on the direct path, at the base output).
  template <class Linear>
  const tensor& output_gradient(typename B::context& ctx, const Linear& base, const tensor& dy) {
    B::multiply(ctx, dy, t_, work_);
    vector_.resize(shape{out_});
    B::sum_rows(ctx, work_, value_type(0), vector_);
    if (direct_ && base.has_bias()) {  // t held W x + b + l: take b ⊙ Σ_rows dy out again
      sums_.resize(shape{out_});
      B::sum_rows(ctx, dy, value_type(0), sums_);
      B::multiply(ctx, sums_, base.bias().value, work_vector_);
      B::axpy(ctx, value_type(-1), work_vector_, vector_);
    }
    B::divide(ctx, vector_, norm_, work_vector_);
    B::axpy(ctx, value_type(1), work_vector_, magnitude_.grad);
    B::copy(ctx, dy, scaled_dy_);
    B::multiply_row_vector(ctx, scaled_dy_, scale_);
    return scaled_dy_;
  }

  /// The gradient at x_d of the (g - 1) ⊙ W x_d term, ((g - 1) ⊙ dy) W; a trainable W also gets
  /// ((g - 1) ⊙ dy)^T x_d. Only for the path that is not direct.
  template <class Linear>
  tensor& base_term_gradient(typename B::context& ctx, Linear& base, const tensor& dy) {
    B::copy(ctx, dy, work_);
    B::multiply_row_vector(ctx, work_, scale_minus_one_);
    if constexpr (weight_trains<Linear>())
      B::gemm(ctx, op::t, op::n, value_type(1), work_, *x_d_, value_type(1), base.weight().grad);
    product_with_weight(ctx, base, op::n, work_, dx_d_);
    return dx_d_;
  }

  /// W <- diag(g) (W + s B A), g measured on the weight as it is (PEFT's merge); the bias is kept.
  template <class Linear>
  void merge(typename B::context& ctx, Linear& base, const tensor& a, const tensor& b, double s) {
    measure_norm(ctx, base, a, b, s);
    apply_magnitude(ctx);
    merged_scale_ = B::copy_to_host(ctx, scale_);
    auto& w = base.weight().dense_value(ctx);
    B::gemm(ctx, op::n, op::n, value_type(s), b, a, value_type(1), w);
    scale_rows(ctx, w, false);
  }
  /// W <- W / g - s B A with the g of the merge (PEFT keeps it for the same reason: the merged
  /// weight no longer tells it). An entry g = 0 erased its row, and unmerging is then an error.
  template <class Linear>
  void unmerge(typename B::context& ctx, Linear& base, const tensor& a, const tensor& b, double s) {
    for (std::size_t i = 0; i < merged_scale_.size(); ++i)
      if (merged_scale_[i] == value_type(0))
        throw error(peft::detail::concat("dora on '", name_, "': cannot unmerge, the magnitude scale of row ", i,
                                         " was 0 and merging erased that row"));
    auto& w = base.weight().dense_value(ctx);
    scale_rows(ctx, w, true);
    B::gemm(ctx, op::n, op::n, value_type(-s), b, a, value_type(1), w);
  }

  /// Keeps the norm of the last update fixed, as the gradient assumes it is: finite-difference
  /// checks of `backward` set it, training does not.
  void hold_norm(bool on) noexcept { hold_ = on; }

  magnitude_parameter& magnitude() noexcept { return magnitude_; }
  const magnitude_parameter& magnitude() const noexcept { return magnitude_; }
  /// Whether the last forward took the direct path (no dropout at work, base frozen).
  [[nodiscard]] bool direct() const noexcept { return direct_; }

  /// Elements of the buffers kept for a step of `rows` rows (`direct`: see `forward`).
  static std::uint64_t activation_elements(std::uint64_t rows, std::uint64_t in, std::uint64_t out, std::uint64_t r,
                                           bool direct) {
    const std::uint64_t per_step = 4 * rows * out + (direct ? 0 : rows * (out + in));
    return per_step + 2 * out * r + r * r + 2 * r + 9 * out;
  }

 private:
  template <class Linear>
  static constexpr bool weight_trains() {
    return std::remove_cvref_t<decltype(std::declval<const Linear&>().weight())>::trainable;
  }
  static void init_constant(typename B::context& ctx, const shape& s, double v, tensor& t) {
    B::copy_from_host(ctx, std::vector<value_type>(s.size(), value_type(v)), s, t);
  }
  /// norm_ = ||W + s B A|| per row (the file comment has the expansion).
  template <class Linear>
  void measure_norm(typename B::context& ctx, const Linear& base, const tensor& a, const tensor& b, double s) {
    measure_weight(ctx, base);
    const value_type two_s = value_type(2 * s), s2 = value_type(s * s);
    q_.resize(shape{out_, r_});
    if (const packed_matrix* w = base.packed_weight()) {
      if constexpr (PackedProducts<B>) {
        a_wt_.resize(shape{r_, out_});
        B::gemm_packed(ctx, op::t, value_type(1), a, *w, value_type(0), a_wt_);  // A W^T
        if (eye_r_.empty()) init_identity(ctx);
        B::gemm(ctx, op::t, op::n, two_s, a_wt_, eye_r_, value_type(0), q_);      // 2s W A^T
      }
    } else {
      B::gemm(ctx, op::n, op::t, two_s, base.weight().value, a, value_type(0), q_);
    }
    gram_.resize(shape{r_, r_});
    B::gemm(ctx, op::n, op::t, value_type(1), a, a, value_type(0), gram_);  // A A^T
    B::gemm(ctx, op::n, op::n, s2, b, gram_, value_type(1), q_);             // + s^2 B A A^T
    B::multiply(ctx, b, q_, row_terms_);
    B::copy(ctx, weight_norm2_, norm2_);
    B::gemm(ctx, op::t, op::t, value_type(1), ones_r_, row_terms_, value_type(1), norm2_);  // row sums
    B::sqrt(ctx, norm2_, norm_);
  }
  /// g = m / norm and g - 1, setting m to the norm first when it has no value yet.
  void apply_magnitude(typename B::context& ctx) {
    if (magnitude_.value.empty()) B::copy(ctx, norm_, magnitude_.value);
    B::divide(ctx, magnitude_.value, norm_, scale_);
    scale_minus_one_.resize(scale_.shape());
    B::fill(ctx, scale_minus_one_, value_type(-1));
    B::axpy(ctx, value_type(1), scale_, scale_minus_one_);
  }
  void init_identity(typename B::context& ctx) {
    std::vector<value_type> eye(r_ * r_, value_type(0));
    for (std::size_t i = 0; i < r_; ++i) eye[i * r_ + i] = value_type(1);
    B::copy_from_host(ctx, eye, shape{r_, r_}, eye_r_);
  }
  /// ||W_i||^2 per row: a kernel pass over a dense W; for a packed W, row by row on the host, once
  /// per packed matrix (its bytes identify it).
  template <class Linear>
  void measure_weight(typename B::context& ctx, const Linear& base) {
    if (const packed_matrix* w = base.packed_weight()) {
      if (w->bytes().data() == measured_packed_ && !weight_norm2_.empty()) return;
      std::vector<value_type> row(w->cols()), sums(out_);
      for (std::size_t i = 0; i < out_; ++i) {
        w->dequantize_rows(i, i + 1, row.data());
        double acc = 0;
        for (const value_type v : row) acc += double(v) * double(v);
        sums[i] = value_type(acc);
      }
      B::copy_from_host(ctx, sums, shape{out_}, weight_norm2_);
      measured_packed_ = w->bytes().data();
      return;
    }
    const tensor& w = base.weight().value;
    if (w.empty())
      throw error(peft::detail::concat("dora on '", name_,
                                       "': the base weight has no value yet; load the checkpoint before the first forward"));
    B::row_squared_norms(ctx, w, weight_norm2_);
  }
  /// c = x W^T (op::t) or x W (op::n) with the layer's weight, dense or packed.
  template <class Linear>
  static void product_with_weight(typename B::context& ctx, const Linear& base, op o, const tensor& x, tensor& c) {
    c.resize(x.shape().with_cols(o == op::t ? base.out_features() : base.in_features()));
    if (const packed_matrix* w = base.packed_weight()) {
      if constexpr (PackedProducts<B>) B::gemm_packed(ctx, o, value_type(1), x, *w, value_type(0), c);
    } else {
      B::gemm(ctx, op::n, o, value_type(1), x, base.weight().value, value_type(0), c);
    }
  }
  void scale_rows(typename B::context& ctx, tensor& w, bool divide) {
    auto host = B::copy_to_host(ctx, w);
    const std::size_t in = w.cols();
    for (std::size_t i = 0; i < host.size(); ++i)
      host[i] = divide ? host[i] / merged_scale_[i / in] : host[i] * merged_scale_[i / in];
    B::copy_from_host(ctx, host, w.shape(), w);
  }

  std::size_t out_, r_;
  std::string name_;
  magnitude_parameter magnitude_;
  bool hold_ = false, direct_ = true;
  const tensor* x_d_ = nullptr;
  const std::byte* measured_packed_ = nullptr;  // the packed weight whose ||W||^2 is in weight_norm2_
  std::vector<value_type> merged_scale_;
  tensor ones_r_, eye_r_, weight_norm2_;  // constants, ||W||^2
  tensor a_wt_, q_, gram_, row_terms_, norm2_, norm_, scale_, scale_minus_one_;  // per update
  tensor vector_, sums_, work_vector_;                                           // [out] scratch
  tensor t_, y_, w_x_d_, work_, scaled_dy_, dx_d_;                               // rows x out (dx_d_: rows x in)
};

}  // namespace peft::methods
