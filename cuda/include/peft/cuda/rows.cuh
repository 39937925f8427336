#pragma once
/// \file Per-row kernels of the CUDA backend: softmax, layer and RMS norm, rotary embedding, gather/scatter. The math is `backend/row_math.hpp`, shared with the eigen backend.
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
#include "peft/backend/row_math.hpp"
#include "peft/cuda/launch.cuh"

namespace peft::cuda {

/// Part of `peft::backend::cuda<T>` (which derives from it); see backend.cuh.
template <std::floating_point T>
struct row_kernels {
  using tensor = device_tensor<T>;
  using index_tensor = device_tensor<std::int32_t>;
  using context = peft::cuda::context;

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
};

}  // namespace peft::cuda
