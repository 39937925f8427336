#pragma once
/// \file Fused update rules of the CUDA backend: SGD, AdamW, Adafactor.
#if !defined(__CUDACC__)
#error "peft/cuda headers must be compiled by nvcc; CPU code uses peft::backend::eigen"
#endif

#include <cmath>
#include <concepts>
#include <cstdint>
#include <span>
#include <vector>

#include "peft/backend/element_math.hpp"
#include "peft/core/backend.hpp"
#include "peft/cuda/context.cuh"
#include "peft/cuda/launch.cuh"

namespace peft::cuda {

/// Part of `peft::backend::cuda<T>` (which derives from it); see backend.cuh.
template <std::floating_point T>
struct update_kernels {
  using tensor = device_tensor<T>;
  using index_tensor = device_tensor<std::int32_t>;
  using context = peft::cuda::context;

  // ---- update rules --------------------------------------------------------------------------------
  static void sgd_update(context& ctx, tensor& w, const tensor& g, tensor& velocity, const sgd_args& a) {
    peft::detail::require_same_shape("cuda::sgd_update", w.shape(), g.shape());
    const auto step = element_math::sgd_step<T>::from(a);
    T* wp = w.data();
    const T* gp = g.data();
    T* vp = velocity.data();
    peft::cuda::launch(ctx.stream, w.size(), [=] __device__(std::size_t i) {
      T unused = 0;  // without momentum the velocity is empty
      step(wp[i], gp[i], vp ? vp[i] : unused);
    });
  }
  static void adamw_update(context& ctx, tensor& w, const tensor& g, tensor& m, tensor& v, const adamw_args& a) {
    peft::detail::require_same_shape("cuda::adamw_update", w.shape(), g.shape());
    const auto step = element_math::adamw_step<T>::from(a);
    T *wp = w.data(), *mp = m.data(), *vp = v.data();
    const T* gp = g.data();
    peft::cuda::launch(ctx.stream, w.size(), [=] __device__(std::size_t i) { step(wp[i], gp[i], mp[i], vp[i]); });
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

}  // namespace peft::cuda
