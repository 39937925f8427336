#pragma once
/// \file `peft::backend::eigen<T>`: the fast CPU backend.
///
/// Tensors live in aligned host memory and are viewed through `Eigen::Map` (no copies). GEMMs go to
/// Eigen's blocked kernels on packing buffers kept in the context (`eigen_gemm.hpp`), split over OpenMP
/// threads when the target is built with it (or to BLAS when the user defines `EIGEN_USE_BLAS`);
/// element-wise kernels are Eigen array expressions over one contiguous range per OpenMP thread, so they
/// vectorise and run on every thread of the team.

#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>  // vectorised erf (GELU)
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "peft/core/backend.hpp"
#include "peft/core/block_buffers.hpp"
#include "peft/core/host_tensor.hpp"
#include "peft/backend/eigen_gemm.hpp"
#include "peft/backend/eigen_packed.hpp"
#include "peft/backend/element_math.hpp"
#include "peft/backend/host_memory.hpp"
#include "peft/backend/host_parallel.hpp"
#include "peft/backend/row_math.hpp"
#include "peft/core/random.hpp"

namespace peft::backend {


/// Eigen policy. `T` is float or double. The context sets Eigen's thread count (0 keeps the default,
/// which is OpenMP's) and owns the GEMM packing buffers, which grow to the largest product seen and
/// are then reused, so a steady-state step allocates nothing. A context serves one host thread at a
/// time; copying one gives empty buffers.
template <std::floating_point T>
struct eigen : detail::host_memory<T> {
  using value_type = T;
  using tensor = host_tensor<T>;
  using index_tensor = host_tensor<std::int32_t>;
  static constexpr const char* name = "eigen";

  struct context : context_base {
    context() = default;
    explicit context(int threads) {
      if (threads > 0) Eigen::setNbThreads(threads);
    }
    detail::gemm_workspace<T> gemm_buffers;
    detail::packed_workspace<T> packed_buffers;  // tiles of packed weights (gemm_packed)
    detail::grow_only_buffer<T> scratch;  // kernel temporaries (Adafactor's update)
    /// Buffers shared between the blocks of a stack (core/block_buffers.hpp).
    block_buffers<tensor> block_scratch;
    /// Products with bf16 frozen weights use AVX512_BF16 dot products (activations rounded to bf16,
    /// fp32 sums; bf16_gemm.hpp) when the CPU has them; false widens the weight to fp32 instead.
    bool bf16_dot = true;
  };

  using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using array = Eigen::Array<T, Eigen::Dynamic, 1>;
  using matrix_map = Eigen::Map<matrix, Eigen::Aligned64>;
  using const_matrix_map = Eigen::Map<const matrix, Eigen::Aligned64>;
  using array_map = Eigen::Map<array, Eigen::Aligned64>;
  using const_array_map = Eigen::Map<const array, Eigen::Aligned64>;

  static matrix_map mat(tensor& t) { return {t.data(), Eigen::Index(t.rows()), Eigen::Index(t.cols())}; }
  static const_matrix_map mat(const tensor& t) { return {t.data(), Eigen::Index(t.rows()), Eigen::Index(t.cols())}; }
  static array_map arr(tensor& t) { return {t.data(), Eigen::Index(t.size())}; }
  static const_array_map arr(const tensor& t) { return {t.data(), Eigen::Index(t.size())}; }
  /// Elements [begin, end) of a tensor as an array (the ranges of `host_parallel_ranges`).
  static Eigen::Map<array> part(T* p, std::size_t begin, std::size_t end) { return {p + begin, Eigen::Index(end - begin)}; }
  static Eigen::Map<const array> part(const T* p, std::size_t begin, std::size_t end) {
    return {p + begin, Eigen::Index(end - begin)};
  }
  /// Runs `f(begin, end)` over the elements of a tensor of n elements, one range per thread.
  template <class F>
  static void sweep(std::size_t n, F&& f) {
    detail::host_parallel_ranges(n, f);
  }

  // ---- element-wise (host transfers come from detail::host_memory) ------------------------------------
  static void fill(context&, tensor& t, T v) {
    sweep(t.size(), [&](std::size_t b, std::size_t e) { part(t.data(), b, e).setConstant(v); });
  }
  static void copy(context&, const tensor& src, tensor& dst) {
    dst.resize(src.shape());
    sweep(src.size(), [&](std::size_t b, std::size_t e) { part(dst.data(), b, e) = part(src.data(), b, e); });
  }
  static void axpy(context&, T alpha, const tensor& x, tensor& y) {
    peft::detail::require_same_shape("eigen::axpy", x.shape(), y.shape());
    sweep(x.size(), [&](std::size_t b, std::size_t e) { part(y.data(), b, e) += alpha * part(x.data(), b, e); });
  }
  static void scale(context&, T alpha, tensor& x) {
    sweep(x.size(), [&](std::size_t b, std::size_t e) { part(x.data(), b, e) *= alpha; });
  }
  static void multiply(context&, const tensor& a, const tensor& b, tensor& out) {
    peft::detail::require_same_shape("eigen::multiply", a.shape(), b.shape());
    out.resize(a.shape());
    sweep(a.size(), [&](std::size_t i, std::size_t e) { part(out.data(), i, e) = part(a.data(), i, e) * part(b.data(), i, e); });
  }
  /// out = a / b element-wise (IEEE: a zero divisor gives an infinity or NaN).
  static void divide(context&, const tensor& a, const tensor& b, tensor& out) {
    peft::detail::require_same_shape("eigen::divide", a.shape(), b.shape());
    out.resize(a.shape());
    sweep(a.size(), [&](std::size_t i, std::size_t e) { part(out.data(), i, e) = part(a.data(), i, e) / part(b.data(), i, e); });
  }
  /// out = sqrt(a) element-wise.
  static void sqrt(context&, const tensor& a, tensor& out) {
    out.resize(a.shape());
    sweep(a.size(), [&](std::size_t i, std::size_t e) { part(out.data(), i, e) = part(a.data(), i, e).sqrt(); });
  }
  static void activation_forward(context&, activation a, const tensor& x, tensor& y) {
    y.resize(x.shape());
    const T* xp = x.data();
    T* yp = y.data();
    if (a == activation::gelu) {  // vectorised: Eigen's erf is a rational approximation good to a few ulp
      sweep(x.size(), [&](std::size_t b, std::size_t e) {
        const auto v = part(xp, b, e);
        part(yp, b, e) = T(0.5) * v * (T(1) + (v * T(activation_math::inv_sqrt_2)).erf());
      });
      return;
    }
    dispatch(a, [&](auto k) {
      detail::host_parallel_for(x.size(), [&](std::size_t i) { yp[i] = activation_math::forward<T>(k(), xp[i]); });
    });
  }
  static void activation_backward(context&, activation a, const tensor& x, const tensor& y, const tensor& dy,
                                  tensor& dx) {
    peft::detail::require_same_shape("eigen::activation_backward (x vs dy)", x.shape(), dy.shape());
    peft::detail::require_same_shape("eigen::activation_backward (x vs y)", x.shape(), y.shape());
    dx.resize(x.shape());
    const T *xp = x.data(), *yp = y.data(), *dyp = dy.data();
    T* dxp = dx.data();
    if (a == activation::gelu) {
      sweep(x.size(), [&](std::size_t b, std::size_t e) {
        const auto v = part(xp, b, e);
        part(dxp, b, e) = part(dyp, b, e) * (T(0.5) * (T(1) + (v * T(activation_math::inv_sqrt_2)).erf()) +
                                             v * T(activation_math::inv_sqrt_2pi) * (T(-0.5) * v.square()).exp());
      });
      return;
    }
    dispatch(a, [&](auto k) {
      detail::host_parallel_for(x.size(), [&](std::size_t i) {
        dxp[i] = dyp[i] * activation_math::derivative<T>(k(), xp[i], yp[i]);
      });
    });
  }
  /// y = x * the mask `dropout_mask` writes for (p, seed, offset), drawn on the fly: nothing is
  /// stored, so a dropout keeps its output and the offset, and its backward draws the mask again.
  /// With `row_spacing` s > 1, row r of x takes the mask of row r * s of a tensor s times as tall.
  static void dropout_apply(context&, T p, std::uint64_t seed, std::uint64_t offset, const tensor& x, tensor& y,
                            std::size_t row_spacing = 1) {
    y.resize(x.shape());
    const auto value = element_math::dropout_value<T>::from(p, seed, offset);
    const T* const in = x.data();
    T* const out = y.data();
    if (row_spacing > 1) {  // the rows a computation keeps of a taller tensor: few, so no vector loop
      const std::size_t cols = x.cols(), stride = row_spacing * cols;
      detail::host_parallel_for(x.size(), [&](std::size_t i) { out[i] = in[i] * value(i / cols * stride + i % cols); });
      return;
    }
    sweep(x.size(), [value, in, out](std::size_t b, std::size_t e) {
      const auto v = value;
      for (std::size_t i = b; i < e; ++i) out[i] = in[i] * v(i);
    });
  }
  static void dropout_mask(context&, T p, std::uint64_t seed, std::uint64_t offset, tensor& mask) {
    const auto value = element_math::dropout_value<T>::from(p, seed, offset);
    T* const m = mask.data();
    sweep(mask.size(), [value, m](std::size_t b, std::size_t e) {
      const auto v = value;  // a local copy: stores through m cannot alias it, so the loop vectorises
      for (std::size_t i = b; i < e; ++i) m[i] = v(i);
    });
  }

  // ---- matrix --------------------------------------------------------------------------------------
  /// c = alpha * op(a) * op(b) + beta * c; every operand viewed as a matrix (rows x cols). With
  /// beta == 0 the old contents of c are ignored (BLAS semantics).
  static void gemm(context& ctx, op ta, op tb, T alpha, const tensor& a, const tensor& b, T beta, tensor& c) {
    const std::size_t m = ta == op::n ? a.rows() : a.cols(), k = ta == op::n ? a.cols() : a.rows();
    const std::size_t kb = tb == op::n ? b.rows() : b.cols(), n = tb == op::n ? b.cols() : b.rows();
    if (k != kb || c.rows() != m || c.cols() != n)
      throw shape_error(peft::detail::concat("eigen::gemm: op(a) is ", m, "x", k, " (a ", a.shape(), "), op(b) is ",
                                             kb, "x", n, " (b ", b.shape(), "), c is ", c.shape()));
    product(ctx, {ta == op::t, tb == op::t, Eigen::Index(m), Eigen::Index(n), Eigen::Index(k), alpha, a.data(),
                  Eigen::Index(a.cols()), b.data(), Eigen::Index(b.cols()), c.data(), Eigen::Index(n)},
            beta, Eigen::nbThreads());
  }
  /// For every (o, i) of an outer_count x inner_count batch: c = alpha op(a) op(b) + beta c, with
  /// op(a) m x k, op(b) k x n, c m x n, addressed through `matrix_batch` strides. Parallel over the
  /// batch, one thread per product.
  /// dst = src for every (o, i) of an outer_count x inner_count batch of rows x cols matrices
  /// addressed through `matrix_batch` strides (a KV cache appending a step's keys).
  static void copy_batched(context&, std::size_t rows, std::size_t cols, matrix_batch<const T*> src, matrix_batch<T*> dst,
                           std::size_t outer_count, std::size_t inner_count) {
    detail::host_parallel_for(outer_count * inner_count * rows, [&](std::size_t idx) {
      const std::size_t r = idx % rows, b = idx / rows, o = b / inner_count, i = b % inner_count;
      std::copy_n(src.data + o * src.outer + i * src.inner + r * src.ld, cols, dst.data + o * dst.outer + i * dst.inner + r * dst.ld);
    }, cols);
  }
  /// c = alpha a op(W) + beta c for a packed W (n x k): op::t gives c (m x n) = a (m x k) W^T (a
  /// linear layer's forward), op::n gives c (m x k) = a (m x n) W (its input gradient). W is
  /// dequantized tile by tile, never as a whole.
  static void gemm_packed(context& ctx, op tw, T alpha, const tensor& a, const packed_matrix& w, T beta, tensor& c) {
    peft::detail::check_packed_shapes("eigen::gemm_packed", tw, a.shape(), w, c.shape());
    if (tw == op::t)
      detail::packed_gemm_nt(ctx.packed_buffers, a.rows(), alpha, a.data(), a.cols(), w, beta, c.data(), c.cols(), ctx.bf16_dot);
    else
      detail::packed_gemm_nn(ctx.packed_buffers, a.rows(), alpha, a.data(), a.cols(), w, beta, c.data(), c.cols(), ctx.bf16_dot);
  }
  static void gemm_batched(context& ctx, op ta, op tb, std::size_t m, std::size_t n, std::size_t k, T alpha,
                           matrix_batch<const T*> a, matrix_batch<const T*> b, T beta, matrix_batch<T*> c,
                           std::size_t outer_count, std::size_t inner_count) {
    ctx.gemm_buffers.reserve_threads(std::size_t(Eigen::nbThreads()));  // before the parallel region
    detail::host_parallel_for_always(outer_count * inner_count, [&](std::size_t idx) {
      const std::size_t o = idx / inner_count, i = idx % inner_count;
      using I = Eigen::Index;
      product(ctx, {ta == op::t, tb == op::t, I(m), I(n), I(k), alpha, a.data + o * a.outer + i * a.inner, I(a.ld),
                    b.data + o * b.outer + i * b.inner, I(b.ld), c.data + o * c.outer + i * c.inner, I(c.ld)},
              beta, 1);
    });
  }

 private:
  /// C = beta C + alpha op(A) op(B) on up to `threads` threads: Eigen's kernel on the context's
  /// packing buffers, or, with `EIGEN_USE_BLAS`, Eigen's product expressions (which call BLAS).
  static void product(context& ctx, const detail::gemm_operands<T>& g, T beta, int threads) {
#ifdef EIGEN_USE_BLAS
    (void)ctx;
    (void)threads;
    using cmap = Eigen::Map<const matrix, Eigen::Unaligned, Eigen::OuterStride<>>;
    using map = Eigen::Map<matrix, Eigen::Unaligned, Eigen::OuterStride<>>;
    const cmap x(g.a, g.ta ? g.k : g.m, g.ta ? g.m : g.k, Eigen::OuterStride<>(g.lda));
    const cmap y(g.b, g.tb ? g.n : g.k, g.tb ? g.k : g.n, Eigen::OuterStride<>(g.ldb));
    map c(g.c, g.m, g.n, Eigen::OuterStride<>(g.ldc));
    auto run = [&](const auto& l, const auto& r) {
      if (beta == T(0)) {
        c.noalias() = g.alpha * l * r;
      } else {
        if (beta != T(1)) c *= beta;
        c.noalias() += g.alpha * l * r;
      }
    };
    if (!g.ta && !g.tb) run(x, y);
    else if (!g.ta) run(x, y.transpose());
    else if (!g.tb) run(x.transpose(), y);
    else run(x.transpose(), y.transpose());
#else
    detail::blocked_gemm(ctx.gemm_buffers, g, beta, threads);
#endif
  }

 public:
  /// y[r, :] += b for every row r.
  static void add_row_vector(context&, tensor& y, const tensor& b) {
    if (b.size() != y.cols())
      throw shape_error(peft::detail::concat("eigen::add_row_vector: vector ", b.shape(), " vs rows of ", y.shape()));
    const auto v = Eigen::Map<const Eigen::Array<T, 1, Eigen::Dynamic>>(b.data(), Eigen::Index(b.size()));
    row_blocks(y.rows(), y.cols(), [&](Eigen::Index r0, Eigen::Index n) { mat(y).middleRows(r0, n).array().rowwise() += v; });
  }
  /// y[r, :] *= v (element by element) for every row r: per-column scales such as (IA)3's.
  static void multiply_row_vector(context&, tensor& y, const tensor& v) {
    if (v.size() != y.cols())
      throw shape_error(peft::detail::concat("eigen::multiply_row_vector: vector ", v.shape(), " vs rows of ", y.shape()));
    const auto s = Eigen::Map<const Eigen::Array<T, 1, Eigen::Dynamic>>(v.data(), Eigen::Index(v.size()));
    row_blocks(y.rows(), y.cols(), [&](Eigen::Index r0, Eigen::Index n) { mat(y).middleRows(r0, n).array().rowwise() *= s; });
  }
  /// out = beta * out + (sum over rows of x); out has x.cols() elements.
  static void sum_rows(context&, const tensor& x, T beta, tensor& out) {
    if (out.size() != x.cols())
      throw shape_error(peft::detail::concat("eigen::sum_rows: output ", out.shape(), " vs columns of ", x.shape()));
    // Column blocks in parallel; each column is summed over the rows in order, as a serial loop would.
    column_blocks(x.rows(), x.cols(), [&](Eigen::Index c0, Eigen::Index n) {
      auto o = Eigen::Map<Eigen::Array<T, 1, Eigen::Dynamic>>(out.data() + c0, n);
      const auto xs = mat(x).middleCols(c0, n).array();
      if (beta == T(0)) o = xs.colwise().sum();
      else o = beta * o + xs.colwise().sum();
    });
  }

  // ---- transformer kernels (the per-row math is shared with CUDA: row_math.hpp) ------------------------
  /// probs[r, :] = softmax of scale * scores[r, :] over the keys that `mask` lets row r see (see
  /// `softmax_mask`); `key_mask` (one row per `mask.blocks_per_mask_row` score blocks) may be null.
  static void masked_softmax(context&, const tensor& scores, const tensor* key_mask, const softmax_mask& mask, T scale,
                             tensor& probs) {
    peft::detail::check_softmax_shapes("eigen::masked_softmax", scores.shape(), key_mask ? &key_mask->shape() : nullptr, mask);
    probs.resize(scores.shape());
    const std::size_t cols = scores.cols(), per_mask = mask.query_rows * mask.blocks_per_mask_row;
    const T* sp = scores.data();
    const T* mp = key_mask ? key_mask->data() : nullptr;
    T* pp = probs.data();
    // row_math::softmax_row's formula, written with Eigen arrays so that exp and the reductions vectorise.
    detail::host_parallel_for(scores.rows(), [&](std::size_t r) {
      const auto n = Eigen::Index(row_math::visible_keys(mask, r, cols));
      Eigen::Map<array> p(pp + r * cols, Eigen::Index(cols));
      p.tail(Eigen::Index(cols) - n).setZero();
      if (n == 0) return;
      const auto z = part(sp + r * cols, 0, std::size_t(n)) * scale;
      T sum;
      if (mp) {
        const auto visible = part(mp + (r / per_mask) * cols, 0, std::size_t(n)) != T(0);
        const T mx = visible.select(z, -std::numeric_limits<T>::infinity()).maxCoeff();
        if (mx == -std::numeric_limits<T>::infinity()) return p.head(n).setZero(), void();  // no visible key
        p.head(n) = visible.select((z - mx).exp(), T(0));
      } else {
        p.head(n) = (z - z.maxCoeff()).exp();
      }
      sum = p.head(n).sum();
      p.head(n) *= sum > T(0) ? T(1) / sum : T(0);
    }, cols);
  }
  /// dscores = scale * p * (dp - sum_j p dp) row by row (the softmax Jacobian-vector product).
  static void softmax_backward(context&, const tensor& probs, const tensor& dprobs, T scale, tensor& dscores) {
    peft::detail::require_same_shape("eigen::softmax_backward", probs.shape(), dprobs.shape());
    dscores.resize(probs.shape());
    const std::size_t cols = probs.cols();
    detail::host_parallel_for(probs.rows(), [&](std::size_t r) {  // row_math::softmax_backward_row, vectorised
      const auto p = part(probs.data() + r * cols, 0, cols), dp = part(dprobs.data() + r * cols, 0, cols);
      const T dot = (p * dp).sum();
      part(dscores.data() + r * cols, 0, cols) = scale * p * (dp - dot);
    }, cols);
  }
  /// y = gamma * (x - mean) * rstd + beta over the last dimension; keeps mean and rstd (one per row).
  static void layer_norm_forward(context&, const tensor& x, const tensor& gamma, const tensor& beta, T eps, tensor& y,
                                 tensor& mean, tensor& rstd) {
    const std::size_t rows = x.rows(), cols = x.cols();
    if (gamma.size() != cols || beta.size() != cols)
      throw shape_error(peft::detail::concat("eigen::layer_norm_forward: input ", x.shape(), " vs gamma ", gamma.shape(),
                                             " and beta ", beta.shape()));
    y.resize(x.shape());
    mean.resize(shape{rows});
    rstd.resize(shape{rows});
    detail::host_parallel_for(rows, [&](std::size_t r) {
      row_math::layer_norm_row(x.data() + r * cols, gamma.data(), beta.data(), cols, eps, y.data() + r * cols, mean[r], rstd[r]);
    }, cols);
  }
  /// dx from dy through layer norm; dgamma += sum_rows(dy * xhat) and dbeta += sum_rows(dy) when given.
  static void layer_norm_backward(context&, const tensor& x, const tensor& gamma, const tensor& mean, const tensor& rstd,
                                  const tensor& dy, tensor& dx, tensor* dgamma, tensor* dbeta) {
    peft::detail::require_same_shape("eigen::layer_norm_backward", x.shape(), dy.shape());
    const std::size_t rows = x.rows(), cols = x.cols();
    dx.resize(x.shape());
    detail::host_parallel_for(rows, [&](std::size_t r) {
      row_math::layer_norm_backward_row(x.data() + r * cols, gamma.data(), mean[r], rstd[r], dy.data() + r * cols, cols,
                                        dx.data() + r * cols);
    }, cols);
    if (dgamma || dbeta) {  // column blocks in parallel, rows in order within each
      column_blocks(rows, cols, [&](Eigen::Index c0, Eigen::Index n) {
        for (std::size_t r = 0; r < rows; ++r) {
          const auto xr = part(x.data() + r * cols, std::size_t(c0), std::size_t(c0 + n));
          const auto dyr = part(dy.data() + r * cols, std::size_t(c0), std::size_t(c0 + n));
          if (dgamma) part(dgamma->data(), std::size_t(c0), std::size_t(c0 + n)) += dyr * (xr - mean[r]) * rstd[r];
          if (dbeta) part(dbeta->data(), std::size_t(c0), std::size_t(c0 + n)) += dyr;
        }
      });
    }
  }
  /// y = gamma * x * rstd over the last dimension, rstd = 1 / sqrt(mean(x^2) + eps) kept per row.
  static void rms_norm_forward(context&, const tensor& x, const tensor& gamma, T eps, tensor& y, tensor& rstd) {
    const std::size_t rows = x.rows(), cols = x.cols();
    if (gamma.size() != cols)
      throw shape_error(peft::detail::concat("eigen::rms_norm_forward: input ", x.shape(), " vs gamma ", gamma.shape()));
    y.resize(x.shape());
    rstd.resize(shape{rows});
    detail::host_parallel_for(rows, [&](std::size_t r) {
      row_math::rms_norm_row(x.data() + r * cols, gamma.data(), cols, eps, y.data() + r * cols, rstd[r]);
    }, cols);
  }
  /// dx from dy through RMS norm; dgamma += sum_rows(dy * x * rstd) when given.
  static void rms_norm_backward(context&, const tensor& x, const tensor& gamma, const tensor& rstd, const tensor& dy,
                                tensor& dx, tensor* dgamma) {
    peft::detail::require_same_shape("eigen::rms_norm_backward", x.shape(), dy.shape());
    const std::size_t rows = x.rows(), cols = x.cols();
    dx.resize(x.shape());
    detail::host_parallel_for(rows, [&](std::size_t r) {
      row_math::rms_norm_backward_row(x.data() + r * cols, gamma.data(), rstd[r], dy.data() + r * cols, cols,
                                      dx.data() + r * cols);
    }, cols);
    if (dgamma)
      column_blocks(rows, cols, [&](Eigen::Index c0, Eigen::Index n) {
        const std::size_t b = std::size_t(c0), e = std::size_t(c0 + n);
        for (std::size_t r = 0; r < rows; ++r)
          part(dgamma->data(), b, e) += part(dy.data() + r * cols, b, e) * part(x.data() + r * cols, b, e) * rstd[r];
      });
  }
  /// y = rotary embedding of x (see `rotary_args`); y may be x.
  static void rotary(context&, const tensor& x, const rotary_args& a, tensor& y) {
    peft::detail::check_rotary_shapes("eigen::rotary", x.shape(), a);
    if (&y != &x) y.resize(x.shape());
    const std::size_t cols = x.cols();
    detail::host_parallel_for(x.rows(), [&](std::size_t r) {
      row_math::rotary_row(x.data() + r * cols, a, a.position_offset + r % a.seq_len, y.data() + r * cols);
    }, cols);
  }
  /// out[i, :] = table[ids[i], :]; out must already have ids.size() rows of table.cols() columns.
  static void gather_rows(context&, const tensor& table, const index_tensor& ids, tensor& out) {
    if (out.rows() != ids.size() || out.cols() != table.cols())
      throw shape_error(peft::detail::concat("eigen::gather_rows: output ", out.shape(), " for ", ids.size(),
                                             " rows of table ", table.shape()));
    const std::size_t cols = table.cols();
    detail::host_parallel_for(ids.size(), [&](std::size_t i) {
      std::copy_n(table.data() + std::size_t(ids[i]) * cols, cols, out.data() + i * cols);
    }, cols);
  }
  /// dtable[ids[i], :] += dout[i, :] (rows may repeat, so this runs serially).
  static void scatter_add_rows(context&, const tensor& dout, const index_tensor& ids, tensor& dtable) {
    if (dout.rows() != ids.size() || dout.cols() != dtable.cols())
      throw shape_error(peft::detail::concat("eigen::scatter_add_rows: gradient ", dout.shape(), " for ", ids.size(),
                                             " rows of table ", dtable.shape()));
    const std::size_t cols = dtable.cols();
    for (std::size_t i = 0; i < ids.size(); ++i) {
      T* dst = dtable.data() + std::size_t(ids[i]) * cols;
      const T* src = dout.data() + i * cols;
      for (std::size_t j = 0; j < cols; ++j) dst[j] += src[j];
    }
  }

  // ---- reductions and losses -----------------------------------------------------------------------
  static double sum_squares(context&, const tensor& t) { return double(arr(t).template cast<double>().square().sum()); }
  /// out[r] = sum over the columns of a[r, :]^2 (summed in double), for every row of `a`.
  static void row_squared_norms(context&, const tensor& a, tensor& out) {
    const std::size_t cols = a.cols();
    out.resize(shape{a.rows()});
    detail::host_parallel_for(a.rows(), [&](std::size_t r) {
      out[r] = T(Eigen::Map<const array>(a.data() + r * cols, Eigen::Index(cols)).template cast<double>().square().sum());
    }, cols);
  }

  /// Mean softmax cross-entropy over rows whose label is not `ignore_index`; writes d loss / d logits.
  /// Labels must be validated by the caller.
  static double softmax_cross_entropy(context&, const tensor& logits, const index_tensor& labels,
                                      std::int32_t ignore_index, tensor& dlogits) {
    if (labels.size() != logits.rows())
      throw shape_error(peft::detail::concat("eigen::softmax_cross_entropy: ", labels.size(), " labels for logits ",
                                             logits.shape()));
    dlogits.resize(logits.shape());
    const std::size_t rows = logits.rows(), cols = logits.cols();
    std::size_t count = 0;
    for (std::size_t r = 0; r < rows; ++r) count += labels[r] != ignore_index;
    const double inv = count ? 1.0 / double(count) : 0.0;
    double total = 0;
    for (std::size_t r = 0; r < rows; ++r) {
      const T* z = logits.data() + r * cols;
      T* d = dlogits.data() + r * cols;
      if (labels[r] == ignore_index) {
        std::fill(d, d + cols, T(0));
        continue;
      }
      const double mx = double(*std::max_element(z, z + cols));
      double sum = 0;
      for (std::size_t j = 0; j < cols; ++j) sum += std::exp(double(z[j]) - mx);
      const double lse = mx + std::log(sum);
      total += lse - double(z[labels[r]]);
      for (std::size_t j = 0; j < cols; ++j)
        d[j] = T((std::exp(double(z[j]) - lse) - (std::int32_t(j) == labels[r] ? 1.0 : 0.0)) * inv);
    }
    return total * inv;
  }
  /// Mean squared error over all elements; writes d loss / d pred.
  static double mse(context&, const tensor& pred, const tensor& target, tensor& dpred) {
    peft::detail::require_same_shape("eigen::mse", pred.shape(), target.shape());
    dpred.resize(pred.shape());
    const double n = double(pred.size());
    arr(dpred) = (arr(pred) - arr(target)) * T(2.0 / n);
    return double((arr(pred) - arr(target)).template cast<double>().square().sum()) / n;
  }

  // ---- update rules --------------------------------------------------------------------------------
  static void sgd_update(context&, tensor& w, const tensor& g, tensor& velocity, const sgd_args& a) {
    peft::detail::require_same_shape("eigen::sgd_update", w.shape(), g.shape());
    const auto step = element_math::sgd_step<T>::from(a);
    T *wp = w.data(), *vp = velocity.data();
    const T* gp = g.data();
    // Without momentum there is no velocity (an empty tensor): a local stands in, never a null reference.
    detail::host_parallel_for(w.size(), [&](std::size_t i) {
      T unused = 0;
      step(wp[i], gp[i], vp ? vp[i] : unused);
    });
  }
  static void adamw_update(context&, tensor& w, const tensor& g, tensor& m, tensor& v, const adamw_args& a) {
    peft::detail::require_same_shape("eigen::adamw_update", w.shape(), g.shape());
    const auto step = element_math::adamw_step<T>::from(a);
    T *wp = w.data(), *mp = m.data(), *vp = v.data();
    const T* gp = g.data();
    detail::host_parallel_for(w.size(), [&](std::size_t i) { step(wp[i], gp[i], mp[i], vp[i]); });
  }
  static void adafactor_update(context& ctx, tensor& w, const tensor& g, tensor& row, tensor& col, tensor& v, tensor& m,
                               const adafactor_args& a) {
    peft::detail::require_same_shape("eigen::adafactor_update", w.shape(), g.shape());
    const T beta2t = T(a.beta2t);
    const auto rows = Eigen::Index(w.rows()), cols = Eigen::Index(w.cols()), n = Eigen::Index(w.size());
    // The update and, when factored, the row and column factors live in the context's scratch buffer.
    T* scratch = ctx.scratch.reserve(std::size_t(n + (a.factored ? rows + cols : 0)));
    Eigen::Map<array, Eigen::Aligned16> update(scratch, n);
    update = arr(g).square() + T(a.eps1);
    if (a.factored) {
      const Eigen::Map<const matrix> U(scratch, rows, cols);
      auto R = arr(row), C = arr(col);
      R = beta2t * R + (T(1) - beta2t) * U.rowwise().mean().array();
      C = beta2t * C + (T(1) - beta2t) * U.colwise().mean().transpose().array();
      Eigen::Map<array> r_factor(scratch + n, rows), c_factor(scratch + n + rows, cols);
      r_factor = (R / R.mean()).rsqrt();
      c_factor = C.rsqrt();
      const auto G = mat(g);
      Eigen::Map<matrix> Upd(scratch, rows, cols);
      for (Eigen::Index i = 0; i < rows; ++i)  // the outer product r c^T, times g, one row at a time
        Upd.row(i).array() = r_factor[i] * c_factor.transpose() * G.row(i).array();
    } else {
      auto V = arr(v);
      V = beta2t * V + (T(1) - beta2t) * update;
      update = V.rsqrt() * arr(g);
    }
    const T rms = std::sqrt(update.square().mean());
    update *= T(a.lr) / std::max(T(1), rms / T(a.clip_threshold));
    auto W = arr(w);
    if (a.weight_decay != 0) W += T(-a.weight_decay * a.lr) * W;
    if (a.beta1 > 0) {
      auto M = arr(m);
      M = T(a.beta1) * M + T(1 - a.beta1) * update;
      W -= M;
    } else {
      W -= update;
    }
  }

 private:
  /// Runs `f(first_row, row_count)` over blocks of a rows x cols matrix's rows, one block per thread
  /// when the matrix is large enough.
  template <class F>
  static void row_blocks(std::size_t rows, std::size_t cols, F&& f) {
    const std::size_t parts = rows * cols >= 32768 ? std::min<std::size_t>(rows, std::size_t(Eigen::nbThreads())) : 1;
    const std::size_t step = parts ? (rows + parts - 1) / parts : 0;
    detail::host_loop(parts, parts > 1, [&](std::size_t p) {
      const std::size_t b = std::min(rows, p * step), e = std::min(rows, b + step);
      if (b < e) f(Eigen::Index(b), Eigen::Index(e - b));
    });
  }
  /// Runs `f(first_column, column_count)` over blocks of a rows x cols matrix's columns (multiples of
  /// 16 wide), one block per thread when the matrix is large enough.
  template <class F>
  static void column_blocks(std::size_t rows, std::size_t cols, F&& f) {
    const std::size_t threads = std::size_t(Eigen::nbThreads());
    const std::size_t parts = rows * cols >= 32768 && cols >= 32 ? std::min<std::size_t>(threads, cols / 16) : 1;
    const std::size_t step = parts > 1 ? ((cols + parts - 1) / parts + 15) / 16 * 16 : cols;
    detail::host_loop(parts, parts > 1, [&](std::size_t p) {
      const std::size_t b = std::min(cols, p * step), e = std::min(cols, b + step);
      if (b < e) f(Eigen::Index(b), Eigen::Index(e - b));
    });
  }
  /// Calls `f` with a type whose call operator returns activation `a` as a constant, so the switch is
  /// hoisted out of element loops.
  template <class F>
  static void dispatch(activation a, F&& f) {
    switch (a) {
      case activation::identity: f([] { return activation::identity; }); break;
      case activation::relu: f([] { return activation::relu; }); break;
      case activation::gelu: f([] { return activation::gelu; }); break;
      case activation::gelu_tanh: f([] { return activation::gelu_tanh; }); break;
      case activation::tanh: f([] { return activation::tanh; }); break;
      case activation::silu: f([] { return activation::silu; }); break;
    }
  }
};

}  // namespace peft::backend
