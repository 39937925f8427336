#pragma once
/// \file Reductions and losses of the CUDA backend (Thrust reductions, one thread per row).
#if !defined(__CUDACC__)
#error "peft/cuda headers must be compiled by nvcc; CPU code uses peft::backend::eigen"
#endif

#include <thrust/count.h>
#include <thrust/execution_policy.h>
#include <thrust/functional.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/transform_reduce.h>

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
struct loss_kernels {
  using tensor = device_tensor<T>;
  using index_tensor = device_tensor<std::int32_t>;
  using context = peft::cuda::context;

  // ---- reductions and losses -----------------------------------------------------------------------
  static double sum_squares(context& ctx, const tensor& t) {
    const T* p = t.data();
    return thrust::transform_reduce(
        thrust::cuda::par.on(ctx.stream), thrust::counting_iterator<std::size_t>(0),
        thrust::counting_iterator<std::size_t>(t.size()),
        [=] __device__(std::size_t i) -> double { return double(p[i]) * double(p[i]); }, 0.0, thrust::plus<double>());
  }
  static void row_squared_norms(context& ctx, const tensor& a, tensor& out) {
    const std::size_t rows = a.rows(), cols = a.cols();
    out.resize(shape{rows});
    const T* ap = a.data();
    T* op_ = out.data();
    peft::cuda::launch(ctx.stream, rows, [=] __device__(std::size_t r) {
      double s = 0;
      for (std::size_t c = 0; c < cols; ++c) s += double(ap[r * cols + c]) * double(ap[r * cols + c]);
      op_[r] = T(s);
    });
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
};

}  // namespace peft::cuda
