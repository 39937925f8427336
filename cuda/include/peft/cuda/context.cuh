#pragma once
/// \file `peft::cuda::context`: the state every CUDA kernel call shares.
#if !defined(__CUDACC__)
#error "peft/cuda headers must be compiled by nvcc; CPU code uses peft::backend::eigen"
#endif

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "peft/core/backend.hpp"
#include "peft/cuda/device_tensor.cuh"
#include "peft/cuda/launch.cuh"

namespace peft::cuda {

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

}  // namespace peft::cuda
