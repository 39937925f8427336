#pragma once
/// \file Host transfers and element-wise kernels of the CUDA backend (one grid-stride kernel over device lambdas).
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
#include "peft/core/random.hpp"
#include "peft/cuda/launch.cuh"

namespace peft::cuda {

/// Part of `peft::backend::cuda<T>` (which derives from it); see backend.cuh.
template <std::floating_point T>
struct elementwise_kernels {
  using tensor = device_tensor<T>;
  using index_tensor = device_tensor<std::int32_t>;
  using context = peft::cuda::context;

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
  static void divide(context& ctx, const tensor& a, const tensor& b, tensor& out) {
    peft::detail::require_same_shape("cuda::divide", a.shape(), b.shape());
    out.resize(a.shape());
    const T *ap = a.data(), *bp = b.data();
    T* op_ = out.data();
    peft::cuda::launch(ctx.stream, a.size(), [=] __device__(std::size_t i) { op_[i] = ap[i] / bp[i]; });
  }
  static void sqrt(context& ctx, const tensor& a, tensor& out) {
    out.resize(a.shape());
    const T* ap = a.data();
    T* op_ = out.data();
    peft::cuda::launch(ctx.stream, a.size(), [=] __device__(std::size_t i) { op_[i] = ::sqrt(ap[i]); });
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
    const auto value = element_math::dropout_value<T>::from(p, seed, offset);
    peft::cuda::launch(ctx.stream, mask.size(), [=] __device__(std::size_t i) { m[i] = value(i); });
  }
};

}  // namespace peft::cuda
