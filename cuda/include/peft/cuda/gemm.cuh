#pragma once
/// \file Matrix kernels of the CUDA backend: cuBLAS GEMMs (row-major operands as column-major transposes), bias add, bias gradient.
#if !defined(__CUDACC__)
#error "peft/cuda headers must be compiled by nvcc; CPU code uses peft::backend::eigen"
#endif

#include <cmath>
#include <concepts>
#include <cstdint>
#include <span>
#include <vector>

#include "peft/core/backend.hpp"
#include "peft/cuda/context.cuh"
#include "peft/cuda/launch.cuh"

namespace peft::cuda {

/// Part of `peft::backend::cuda<T>` (which derives from it); see backend.cuh.
template <std::floating_point T>
struct matrix_kernels {
  using tensor = device_tensor<T>;
  using index_tensor = device_tensor<std::int32_t>;
  using context = peft::cuda::context;

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
  /// dst = src for a two-level batch of rows x cols matrices (one thread per element).
  static void copy_batched(context& ctx, std::size_t rows, std::size_t cols, matrix_batch<const T*> src, matrix_batch<T*> dst,
                           std::size_t outer_count, std::size_t inner_count) {
    const std::size_t n = outer_count * inner_count * rows * cols;
    if (n == 0) return;
    peft::cuda::launch(ctx.stream, n, [=] __device__(std::size_t e) {
      const std::size_t c = e % cols, r = (e / cols) % rows, b = e / (cols * rows), o = b / inner_count, i = b % inner_count;
      dst.data[o * dst.outer + i * dst.inner + r * dst.ld + c] = src.data[o * src.outer + i * src.inner + r * src.ld + c];
    });
  }
  static void add_row_vector(context& ctx, tensor& y, const tensor& b) {
    if (b.size() != y.cols())
      throw shape_error(peft::detail::concat("cuda::add_row_vector: vector ", b.shape(), " vs rows of ", y.shape()));
    T* yp = y.data();
    const T* bp = b.data();
    const std::size_t cols = y.cols();
    peft::cuda::launch(ctx.stream, y.size(), [=] __device__(std::size_t i) { yp[i] += bp[i % cols]; });
  }
  static void multiply_row_vector(context& ctx, tensor& y, const tensor& v) {
    if (v.size() != y.cols())
      throw shape_error(peft::detail::concat("cuda::multiply_row_vector: vector ", v.shape(), " vs rows of ", y.shape()));
    T* yp = y.data();
    const T* vp = v.data();
    const std::size_t cols = y.cols();
    peft::cuda::launch(ctx.stream, y.size(), [=] __device__(std::size_t i) { yp[i] *= vp[i % cols]; });
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
};

}  // namespace peft::cuda
