#pragma once
/// \file `peft::backend::cuda<T>`: the GPU backend. Include only from nvcc-compiled files.
///
/// GEMMs go to cuBLAS (row-major operands passed as their column-major transposes); element-wise
/// work runs in one generic grid-stride kernel over device lambdas; reductions use Thrust. Row-wise
/// kernels (softmax cross-entropy, Adafactor's factored moments) use one thread per row or column,
/// which is right for the narrow heads and parameter shapes they see. All work is issued on the
/// context's stream; results copied to the host are synchronous.

#if !defined(__CUDACC__)
#error "peft/cuda/backend.cuh must be compiled by nvcc; CPU code uses peft::backend::eigen"
#endif

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <thrust/count.h>
#include <thrust/execution_policy.h>
#include <thrust/functional.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/transform_reduce.h>

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "peft/backend/row_math.hpp"
#include "peft/core/backend.hpp"
#include "peft/core/random.hpp"
#include "peft/cuda/device_tensor.cuh"

namespace peft::cuda {

/// Throws `peft::error` naming the call when a cuBLAS status is not success.
inline void check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw error(peft::detail::concat("cublas: ", what, " failed with status ", int(status)));
}

namespace kernels {
/// Runs `f(i)` for i in [0, n) with a grid-stride loop.
template <class F>
__global__ void for_each_index(std::size_t n, F f) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(blockDim.x) * gridDim.x)
    f(i);
}
}  // namespace kernels

/// Launches `f(i)` for every i in [0, n) on `stream`.
template <class F>
void launch(cudaStream_t stream, std::size_t n, F f) {
  if (n == 0) return;
  constexpr unsigned threads = 256;
  const std::size_t blocks = std::min<std::size_t>((n + threads - 1) / threads, 65535 * 8);
  kernels::for_each_index<<<unsigned(blocks), threads, 0, stream>>>(n, f);
  check(cudaGetLastError(), "kernel launch");
}

/// Number of CUDA devices, or 0 when the driver or a device is missing (then `why` says why).
inline int device_count(std::string* why = nullptr) {
  int n = 0;
  const cudaError_t st = cudaGetDeviceCount(&n);
  if (st != cudaSuccess) {
    if (why) *why = cudaGetErrorString(st);
    return 0;
  }
  if (n == 0 && why) *why = "no CUDA device";
  return n;
}

}  // namespace peft::cuda

namespace peft::backend {

/// CUDA policy. `T` is float or double.
template <std::floating_point T>
struct cuda {
  using value_type = T;
  using tensor = peft::cuda::device_tensor<T>;
  using index_tensor = peft::cuda::device_tensor<std::int32_t>;
  static constexpr const char* name = "cuda";

  /// Owns the cuBLAS handle, the stream and a reduction scratch buffer. Not copyable.
  struct context : context_base {
    context() {
      peft::cuda::check(cublasCreate(&blas), "cublasCreate");
      peft::cuda::check(cublasSetStream(blas, stream), "cublasSetStream");
    }
    context(const context&) = delete;
    context& operator=(const context&) = delete;
    ~context() {
      if (blas) cublasDestroy(blas);
    }
    /// Device scratch of at least `n` doubles, kept between calls.
    double* scratch(std::size_t n) {
      if (scratch_buf.size() < n || scratch_buf.empty()) scratch_buf.resize(shape{std::max<std::size_t>(n, 1)});
      return scratch_buf.data();
    }
    cublasHandle_t blas = nullptr;
    cudaStream_t stream = nullptr;  // the default stream
    peft::cuda::device_tensor<double> scratch_buf;
  };

  // ---- host transfer -------------------------------------------------------------------------------
  static void copy_from_host(context&, std::span<const T> src, const shape& s, tensor& dst) {
    if (src.size() != s.size())
      throw shape_error(peft::detail::concat("cuda::copy_from_host: ", src.size(), " values for shape ", s));
    dst.resize(s);
    if (!src.empty())
      peft::cuda::check(cudaMemcpy(dst.data(), src.data(), src.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  }
  static std::vector<T> copy_to_host(context&, const tensor& t) {
    std::vector<T> h(t.size());
    if (!h.empty())
      peft::cuda::check(cudaMemcpy(h.data(), t.data(), h.size() * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
    return h;
  }
  static void copy_labels(context&, std::span<const std::int32_t> src, index_tensor& dst) {
    dst.resize(shape{src.size()});
    if (!src.empty())
      peft::cuda::check(cudaMemcpy(dst.data(), src.data(), src.size() * sizeof(std::int32_t), cudaMemcpyHostToDevice),
                        "cudaMemcpy labels");
  }

  // ---- element-wise --------------------------------------------------------------------------------
  static void fill(context& ctx, tensor& t, T v) {
    T* p = t.data();
    peft::cuda::launch(ctx.stream, t.size(), [=] __device__(std::size_t i) { p[i] = v; });
  }
  static void copy(context& ctx, const tensor& src, tensor& dst) {
    dst.resize(src.shape());
    if (src.size())
      peft::cuda::check(cudaMemcpyAsync(dst.data(), src.data(), src.size() * sizeof(T), cudaMemcpyDeviceToDevice, ctx.stream),
                        "cudaMemcpyAsync D2D");
  }
  static void axpy(context& ctx, T alpha, const tensor& x, tensor& y) {
    peft::detail::require_same_shape("cuda::axpy", x.shape(), y.shape());
    const T* xp = x.data();
    T* yp = y.data();
    peft::cuda::launch(ctx.stream, x.size(), [=] __device__(std::size_t i) { yp[i] += alpha * xp[i]; });
  }
  static void scale(context& ctx, T alpha, tensor& x) {
    T* p = x.data();
    peft::cuda::launch(ctx.stream, x.size(), [=] __device__(std::size_t i) { p[i] *= alpha; });
  }
  static void multiply(context& ctx, const tensor& a, const tensor& b, tensor& out) {
    peft::detail::require_same_shape("cuda::multiply", a.shape(), b.shape());
    out.resize(a.shape());
    const T *ap = a.data(), *bp = b.data();
    T* op_ = out.data();
    peft::cuda::launch(ctx.stream, a.size(), [=] __device__(std::size_t i) { op_[i] = ap[i] * bp[i]; });
  }
  static void activation_forward(context& ctx, activation a, const tensor& x, tensor& y) {
    y.resize(x.shape());
    const T* xp = x.data();
    T* yp = y.data();
    peft::cuda::launch(ctx.stream, x.size(), [=] __device__(std::size_t i) { yp[i] = activation_math::forward<T>(a, xp[i]); });
  }
  static void activation_backward(context& ctx, activation a, const tensor& x, const tensor& y, const tensor& dy,
                                  tensor& dx) {
    peft::detail::require_same_shape("cuda::activation_backward (x vs dy)", x.shape(), dy.shape());
    peft::detail::require_same_shape("cuda::activation_backward (x vs y)", x.shape(), y.shape());
    dx.resize(x.shape());
    const T *xp = x.data(), *yp = y.data(), *dyp = dy.data();
    T* dxp = dx.data();
    peft::cuda::launch(ctx.stream, x.size(), [=] __device__(std::size_t i) {
      dxp[i] = dyp[i] * activation_math::derivative<T>(a, xp[i], yp[i]);
    });
  }
  static void dropout_mask(context& ctx, T p, std::uint64_t seed, std::uint64_t offset, tensor& mask) {
    T* m = mask.data();
    const T keep = T(1) / (T(1) - p);
    const double pd = double(p);
    peft::cuda::launch(ctx.stream, mask.size(), [=] __device__(std::size_t i) {
      m[i] = counter_uniform(seed, offset + i) >= pd ? keep : T(0);
    });
  }

  // ---- matrix --------------------------------------------------------------------------------------
  /// Row-major c = alpha op(a) op(b) + beta c, computed by cuBLAS as the column-major
  /// c^T = op(b)^T op(a)^T (a row-major matrix is its transpose in column-major order).
  static void gemm(context& ctx, op ta, op tb, T alpha, const tensor& a, const tensor& b, T beta, tensor& c) {
    const std::size_t m = ta == op::n ? a.rows() : a.cols(), k = ta == op::n ? a.cols() : a.rows();
    const std::size_t kb = tb == op::n ? b.rows() : b.cols(), n = tb == op::n ? b.cols() : b.rows();
    if (k != kb || c.rows() != m || c.cols() != n)
      throw shape_error(peft::detail::concat("cuda::gemm: op(a) is ", m, "x", k, " (a ", a.shape(), "), op(b) is ", kb,
                                             "x", n, " (b ", b.shape(), "), c is ", c.shape()));
    if (m == 0 || n == 0) return;
    const cublasOperation_t opa = ta == op::n ? CUBLAS_OP_N : CUBLAS_OP_T;
    const cublasOperation_t opb = tb == op::n ? CUBLAS_OP_N : CUBLAS_OP_T;
    const int lda = int(std::max<std::size_t>(1, a.cols())), ldb = int(std::max<std::size_t>(1, b.cols()));
    const int ldc = int(std::max<std::size_t>(1, n));
    if constexpr (std::is_same_v<T, float>)
      peft::cuda::check(cublasSgemm(ctx.blas, opb, opa, int(n), int(m), int(k), &alpha, b.data(), ldb, a.data(), lda, &beta,
                                    c.data(), ldc),
                        "cublasSgemm");
    else
      peft::cuda::check(cublasDgemm(ctx.blas, opb, opa, int(n), int(m), int(k), &alpha, b.data(), ldb, a.data(), lda, &beta,
                                    c.data(), ldc),
                        "cublasDgemm");
  }
  /// Two-level batch: one cublas<t>gemmStridedBatched per outer index over the inner batch.
  static void gemm_batched(context& ctx, op ta, op tb, std::size_t m, std::size_t n, std::size_t k, T alpha,
                           matrix_batch<const T*> a, matrix_batch<const T*> b, T beta, matrix_batch<T*> c,
                           std::size_t outer_count, std::size_t inner_count) {
    if (m == 0 || n == 0 || outer_count == 0 || inner_count == 0) return;
    const cublasOperation_t opa = ta == op::n ? CUBLAS_OP_N : CUBLAS_OP_T;
    const cublasOperation_t opb = tb == op::n ? CUBLAS_OP_N : CUBLAS_OP_T;
    for (std::size_t o = 0; o < outer_count; ++o) {
      const T* ap = a.data + o * a.outer;
      const T* bp = b.data + o * b.outer;
      T* cp = c.data + o * c.outer;
      if constexpr (std::is_same_v<T, float>)
        peft::cuda::check(cublasSgemmStridedBatched(ctx.blas, opb, opa, int(n), int(m), int(k), &alpha, bp, int(b.ld),
                                                    (long long)b.inner, ap, int(a.ld), (long long)a.inner, &beta, cp,
                                                    int(c.ld), (long long)c.inner, int(inner_count)),
                          "cublasSgemmStridedBatched");
      else
        peft::cuda::check(cublasDgemmStridedBatched(ctx.blas, opb, opa, int(n), int(m), int(k), &alpha, bp, int(b.ld),
                                                    (long long)b.inner, ap, int(a.ld), (long long)a.inner, &beta, cp,
                                                    int(c.ld), (long long)c.inner, int(inner_count)),
                          "cublasDgemmStridedBatched");
    }
  }
  static void add_row_vector(context& ctx, tensor& y, const tensor& b) {
    if (b.size() != y.cols())
      throw shape_error(peft::detail::concat("cuda::add_row_vector: vector ", b.shape(), " vs rows of ", y.shape()));
    T* yp = y.data();
    const T* bp = b.data();
    const std::size_t cols = y.cols();
    peft::cuda::launch(ctx.stream, y.size(), [=] __device__(std::size_t i) { yp[i] += bp[i % cols]; });
  }
  static void sum_rows(context& ctx, const tensor& x, T beta, tensor& out) {
    if (out.size() != x.cols())
      throw shape_error(peft::detail::concat("cuda::sum_rows: output ", out.shape(), " vs columns of ", x.shape()));
    const T* xp = x.data();
    T* o = out.data();
    const std::size_t rows = x.rows(), cols = x.cols();
    peft::cuda::launch(ctx.stream, cols, [=] __device__(std::size_t j) {
      T s = 0;
      for (std::size_t r = 0; r < rows; ++r) s += xp[r * cols + j];
      o[j] = beta == T(0) ? s : beta * o[j] + s;
    });
  }

  // ---- transformer kernels (one thread per row: rows are short, rows are many; the per-row math is
  // shared with the eigen backend, peft/backend/row_math.hpp) ------------------------------------------
  static void masked_softmax(context& ctx, const tensor& scores, const tensor* key_mask, const softmax_mask& mask, T scale,
                             tensor& probs) {
    peft::detail::check_softmax_shapes("cuda::masked_softmax", scores.shape(), key_mask ? &key_mask->shape() : nullptr, mask);
    probs.resize(scores.shape());
    const std::size_t cols = scores.cols(), per_mask = mask.query_rows * mask.blocks_per_mask_row;
    const T *sp = scores.data(), *mp = key_mask ? key_mask->data() : nullptr;
    T* pp = probs.data();
    const softmax_mask m = mask;
    peft::cuda::launch(ctx.stream, scores.rows(), [=] __device__(std::size_t r) {
      row_math::softmax_row(sp + r * cols, mp ? mp + (r / per_mask) * cols : nullptr, m, r, cols, scale, pp + r * cols);
    });
  }
  static void softmax_backward(context& ctx, const tensor& probs, const tensor& dprobs, T scale, tensor& dscores) {
    peft::detail::require_same_shape("cuda::softmax_backward", probs.shape(), dprobs.shape());
    dscores.resize(probs.shape());
    const std::size_t cols = probs.cols();
    const T *pp = probs.data(), *dpp = dprobs.data();
    T* dsp = dscores.data();
    peft::cuda::launch(ctx.stream, probs.rows(), [=] __device__(std::size_t r) {
      row_math::softmax_backward_row(pp + r * cols, dpp + r * cols, cols, scale, dsp + r * cols);
    });
  }
  static void layer_norm_forward(context& ctx, const tensor& x, const tensor& gamma, const tensor& beta, T eps, tensor& y,
                                 tensor& mean, tensor& rstd) {
    const std::size_t rows = x.rows(), cols = x.cols();
    if (gamma.size() != cols || beta.size() != cols)
      throw shape_error(peft::detail::concat("cuda::layer_norm_forward: input ", x.shape(), " vs gamma ", gamma.shape(),
                                             " and beta ", beta.shape()));
    y.resize(x.shape());
    mean.resize(shape{rows});
    rstd.resize(shape{rows});
    const T *xp = x.data(), *g = gamma.data(), *bt = beta.data();
    T *yp = y.data(), *mp = mean.data(), *rp = rstd.data();
    peft::cuda::launch(ctx.stream, rows, [=] __device__(std::size_t r) {
      row_math::layer_norm_row(xp + r * cols, g, bt, cols, eps, yp + r * cols, mp[r], rp[r]);
    });
  }
  static void layer_norm_backward(context& ctx, const tensor& x, const tensor& gamma, const tensor& mean,
                                  const tensor& rstd, const tensor& dy, tensor& dx, tensor* dgamma, tensor* dbeta) {
    peft::detail::require_same_shape("cuda::layer_norm_backward", x.shape(), dy.shape());
    const std::size_t rows = x.rows(), cols = x.cols();
    dx.resize(x.shape());
    const T *xp = x.data(), *g = gamma.data(), *mp = mean.data(), *rp = rstd.data(), *dyp = dy.data();
    T* dxp = dx.data();
    peft::cuda::launch(ctx.stream, rows, [=] __device__(std::size_t r) {
      row_math::layer_norm_backward_row(xp + r * cols, g, mp[r], rp[r], dyp + r * cols, cols, dxp + r * cols);
    });
    T* dg = dgamma ? dgamma->data() : nullptr;
    T* db = dbeta ? dbeta->data() : nullptr;
    if (dg || db)
      peft::cuda::launch(ctx.stream, cols, [=] __device__(std::size_t j) {
        T sg = 0, sb = 0;
        for (std::size_t r = 0; r < rows; ++r) {
          sg += dyp[r * cols + j] * (xp[r * cols + j] - mp[r]) * rp[r];
          sb += dyp[r * cols + j];
        }
        if (dg) dg[j] += sg;
        if (db) db[j] += sb;
      });
  }
  static void rms_norm_forward(context& ctx, const tensor& x, const tensor& gamma, T eps, tensor& y, tensor& rstd) {
    const std::size_t rows = x.rows(), cols = x.cols();
    if (gamma.size() != cols)
      throw shape_error(peft::detail::concat("cuda::rms_norm_forward: input ", x.shape(), " vs gamma ", gamma.shape()));
    y.resize(x.shape());
    rstd.resize(shape{rows});
    const T *xp = x.data(), *g = gamma.data();
    T *yp = y.data(), *rp = rstd.data();
    peft::cuda::launch(ctx.stream, rows, [=] __device__(std::size_t r) {
      row_math::rms_norm_row(xp + r * cols, g, cols, eps, yp + r * cols, rp[r]);
    });
  }
  static void rms_norm_backward(context& ctx, const tensor& x, const tensor& gamma, const tensor& rstd, const tensor& dy,
                                tensor& dx, tensor* dgamma) {
    peft::detail::require_same_shape("cuda::rms_norm_backward", x.shape(), dy.shape());
    const std::size_t rows = x.rows(), cols = x.cols();
    dx.resize(x.shape());
    const T *xp = x.data(), *g = gamma.data(), *rp = rstd.data(), *dyp = dy.data();
    T* dxp = dx.data();
    peft::cuda::launch(ctx.stream, rows, [=] __device__(std::size_t r) {
      row_math::rms_norm_backward_row(xp + r * cols, g, rp[r], dyp + r * cols, cols, dxp + r * cols);
    });
    if (T* dg = dgamma ? dgamma->data() : nullptr)
      peft::cuda::launch(ctx.stream, cols, [=] __device__(std::size_t j) {
        T s = 0;
        for (std::size_t r = 0; r < rows; ++r) s += dyp[r * cols + j] * xp[r * cols + j] * rp[r];
        dg[j] += s;
      });
  }
  static void rotary(context& ctx, const tensor& x, const rotary_args& a, tensor& y) {
    peft::detail::check_rotary_shapes("cuda::rotary", x.shape(), a);
    if (&y != &x) y.resize(x.shape());
    const std::size_t cols = x.cols();
    const T* xp = x.data();
    T* yp = y.data();
    const rotary_args args = a;
    peft::cuda::launch(ctx.stream, x.rows(), [=] __device__(std::size_t r) {
      row_math::rotary_row(xp + r * cols, args, args.position_offset + r % args.seq_len, yp + r * cols);
    });
  }
  static void gather_rows(context& ctx, const tensor& table, const index_tensor& ids, tensor& out) {
    if (out.rows() != ids.size() || out.cols() != table.cols())
      throw shape_error(peft::detail::concat("cuda::gather_rows: output ", out.shape(), " for ", ids.size(),
                                             " rows of table ", table.shape()));
    const std::size_t cols = table.cols();
    const T* tp = table.data();
    const std::int32_t* ip = ids.data();
    T* op_ = out.data();
    peft::cuda::launch(ctx.stream, out.size(), [=] __device__(std::size_t e) {
      const std::size_t i = e / cols, j = e % cols;
      op_[e] = tp[std::size_t(ip[i]) * cols + j];
    });
  }
  static void scatter_add_rows(context& ctx, const tensor& dout, const index_tensor& ids, tensor& dtable) {
    if (dout.rows() != ids.size() || dout.cols() != dtable.cols())
      throw shape_error(peft::detail::concat("cuda::scatter_add_rows: gradient ", dout.shape(), " for ", ids.size(),
                                             " rows of table ", dtable.shape()));
    const std::size_t cols = dtable.cols();
    const T* dp = dout.data();
    const std::int32_t* ip = ids.data();
    T* tp = dtable.data();
    peft::cuda::launch(ctx.stream, dout.size(), [=] __device__(std::size_t e) {
      const std::size_t i = e / cols, j = e % cols;
      atomicAdd(tp + std::size_t(ip[i]) * cols + j, dp[e]);
    });
  }

  // ---- reductions and losses -----------------------------------------------------------------------
  static double sum_squares(context& ctx, const tensor& t) {
    const T* p = t.data();
    return thrust::transform_reduce(
        thrust::cuda::par.on(ctx.stream), thrust::counting_iterator<std::size_t>(0),
        thrust::counting_iterator<std::size_t>(t.size()),
        [=] __device__(std::size_t i) -> double { return double(p[i]) * double(p[i]); }, 0.0, thrust::plus<double>());
  }
  static double softmax_cross_entropy(context& ctx, const tensor& logits, const index_tensor& labels,
                                      std::int32_t ignore_index, tensor& dlogits) {
    if (labels.size() != logits.rows())
      throw shape_error(peft::detail::concat("cuda::softmax_cross_entropy: ", labels.size(), " labels for logits ",
                                             logits.shape()));
    dlogits.resize(logits.shape());
    const std::size_t rows = logits.rows(), cols = logits.cols();
    const std::int32_t* lp = labels.data();
    const auto count = std::size_t(thrust::count_if(thrust::cuda::par.on(ctx.stream), lp, lp + rows,
                                                     [=] __device__(std::int32_t l) -> bool { return l != ignore_index; }));
    const double inv = count ? 1.0 / double(count) : 0.0;
    double* row_loss = ctx.scratch(rows);
    const T* z = logits.data();
    T* d = dlogits.data();
    peft::cuda::launch(ctx.stream, rows, [=] __device__(std::size_t r) {
      const T* zr = z + r * cols;
      T* dr = d + r * cols;
      const std::int32_t y = lp[r];
      if (y == ignore_index) {
        for (std::size_t j = 0; j < cols; ++j) dr[j] = T(0);
        row_loss[r] = 0;
        return;
      }
      double mx = double(zr[0]);
      for (std::size_t j = 1; j < cols; ++j) mx = fmax(mx, double(zr[j]));
      double sum = 0;
      for (std::size_t j = 0; j < cols; ++j) sum += exp(double(zr[j]) - mx);
      const double lse = mx + log(sum);
      row_loss[r] = lse - double(zr[y]);
      for (std::size_t j = 0; j < cols; ++j)
        dr[j] = T((exp(double(zr[j]) - lse) - (std::int32_t(j) == y ? 1.0 : 0.0)) * inv);
    });
    return thrust::reduce(thrust::cuda::par.on(ctx.stream), row_loss, row_loss + rows, 0.0) * inv;
  }
  static double mse(context& ctx, const tensor& pred, const tensor& target, tensor& dpred) {
    peft::detail::require_same_shape("cuda::mse", pred.shape(), target.shape());
    dpred.resize(pred.shape());
    const T *p = pred.data(), *t = target.data();
    T* d = dpred.data();
    const double n = double(pred.size());
    peft::cuda::launch(ctx.stream, pred.size(), [=] __device__(std::size_t i) { d[i] = (p[i] - t[i]) * T(2.0 / n); });
    return thrust::transform_reduce(
               thrust::cuda::par.on(ctx.stream), thrust::counting_iterator<std::size_t>(0),
               thrust::counting_iterator<std::size_t>(pred.size()),
               [=] __device__(std::size_t i) -> double {
                 const double e = double(p[i]) - double(t[i]);
                 return e * e;
               },
               0.0, thrust::plus<double>()) /
           n;
  }

  // ---- update rules --------------------------------------------------------------------------------
  static void sgd_update(context& ctx, tensor& w, const tensor& g, tensor& velocity, const sgd_args& a) {
    peft::detail::require_same_shape("cuda::sgd_update", w.shape(), g.shape());
    T* wp = w.data();
    const T* gp = g.data();
    T* vp = velocity.data();
    const T lr = T(a.lr), mom = T(a.momentum), damp = T(a.dampening), wd = T(a.weight_decay);
    const bool nesterov = a.nesterov, first = a.first_step, plain = a.momentum == 0;
    peft::cuda::launch(ctx.stream, w.size(), [=] __device__(std::size_t i) {
      const T d = gp[i] + wd * wp[i];
      if (plain) {
        wp[i] -= lr * d;
        return;
      }
      vp[i] = first ? d : mom * vp[i] + (T(1) - damp) * d;
      wp[i] -= lr * (nesterov ? d + mom * vp[i] : vp[i]);
    });
  }
  static void adamw_update(context& ctx, tensor& w, const tensor& g, tensor& m, tensor& v, const adamw_args& a) {
    peft::detail::require_same_shape("cuda::adamw_update", w.shape(), g.shape());
    T *wp = w.data(), *mp = m.data(), *vp = v.data();
    const T* gp = g.data();
    const T b1 = T(a.beta1), b2 = T(a.beta2), eps = T(a.eps), lr = T(a.lr);
    const T bc1 = T(1 - std::pow(a.beta1, double(a.step))), bc2 = T(1 - std::pow(a.beta2, double(a.step)));
    const T decay = T(1 - a.lr * a.weight_decay);
    peft::cuda::launch(ctx.stream, w.size(), [=] __device__(std::size_t i) {
      const T gi = gp[i];
      mp[i] = b1 * mp[i] + (T(1) - b1) * gi;
      vp[i] = b2 * vp[i] + (T(1) - b2) * gi * gi;
      wp[i] = wp[i] * decay - lr * (mp[i] / bc1) / (sqrt(vp[i] / bc2) + eps);
    });
  }
  static void adafactor_update(context& ctx, tensor& w, const tensor& g, tensor& row, tensor& col, tensor& v, tensor& m,
                               const adafactor_args& a) {
    peft::detail::require_same_shape("cuda::adafactor_update", w.shape(), g.shape());
    const std::size_t n = w.size(), rows = w.rows(), cols = w.cols();
    double* upd = ctx.scratch(n);  // the unscaled update, in double
    const T* gp = g.data();
    const double b = a.beta2t, eps1 = a.eps1;
    if (a.factored) {
      T *rp = row.data(), *cp = col.data();
      peft::cuda::launch(ctx.stream, rows, [=] __device__(std::size_t r) {
        double s = 0;
        for (std::size_t c = 0; c < cols; ++c) s += double(gp[r * cols + c]) * double(gp[r * cols + c]) + eps1;
        rp[r] = T(b * double(rp[r]) + (1 - b) * s / double(cols));
      });
      peft::cuda::launch(ctx.stream, cols, [=] __device__(std::size_t c) {
        double s = 0;
        for (std::size_t r = 0; r < rows; ++r) s += double(gp[r * cols + c]) * double(gp[r * cols + c]) + eps1;
        cp[c] = T(b * double(cp[c]) + (1 - b) * s / double(rows));
      });
      const double row_mean = thrust::reduce(thrust::cuda::par.on(ctx.stream), rp, rp + rows, T(0)) / double(rows);
      peft::cuda::launch(ctx.stream, n, [=] __device__(std::size_t i) {
        const std::size_t r = i / cols, c = i % cols;
        upd[i] = double(gp[i]) / sqrt(double(rp[r]) / row_mean) / sqrt(double(cp[c]));
      });
    } else {
      T* vp = v.data();
      peft::cuda::launch(ctx.stream, n, [=] __device__(std::size_t i) {
        vp[i] = T(b * double(vp[i]) + (1 - b) * (double(gp[i]) * double(gp[i]) + eps1));
        upd[i] = double(gp[i]) / sqrt(double(vp[i]));
      });
    }
    const double ss = thrust::transform_reduce(
        thrust::cuda::par.on(ctx.stream), upd, upd + n, [] __device__(double x) -> double { return x * x; }, 0.0, thrust::plus<double>());
    const double factor = a.lr / std::max(1.0, std::sqrt(ss / double(n)) / a.clip_threshold);
    T* wp = w.data();
    T* mp = m.data();
    const double beta1 = a.beta1, decay = a.weight_decay * a.lr;
    peft::cuda::launch(ctx.stream, n, [=] __device__(std::size_t i) {
      double step = upd[i] * factor;
      if (beta1 > 0) {
        mp[i] = T(beta1 * double(mp[i]) + (1 - beta1) * step);
        step = double(mp[i]);
      }
      wp[i] = T(double(wp[i]) - decay * double(wp[i]) - step);
    });
  }
};

}  // namespace peft::backend
