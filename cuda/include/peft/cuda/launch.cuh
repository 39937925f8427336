#pragma once
/// \file Launching device work: the generic grid-stride kernel over device lambdas, cuBLAS status
/// checks, and device discovery.
#if !defined(__CUDACC__)
#error "peft/cuda headers must be compiled by nvcc; CPU code uses peft::backend::eigen"
#endif

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "peft/core/error.hpp"

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
