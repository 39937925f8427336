#pragma once
/// \file `peft::backend::cuda<T>`: the GPU backend. Include only from nvcc-compiled files.
///
/// Split by concern, each in its own header: the context (context.cuh), launching (launch.cuh),
/// host transfers and element-wise kernels (elementwise.cuh), cuBLAS GEMMs (gemm.cuh), per-row
/// kernels on the math shared with the eigen backend (rows.cuh), reductions and losses (losses.cuh),
/// and fused update rules (optimizers.cuh). This header puts them together as the policy type. All
/// work is issued on the context's stream; results copied to the host are synchronous.
#if !defined(__CUDACC__)
#error "peft/cuda headers must be compiled by nvcc; CPU code uses peft::backend::eigen"
#endif

#include <concepts>
#include <cstdint>

#include "peft/core/backend.hpp"
#include "peft/cuda/context.cuh"
#include "peft/cuda/device_tensor.cuh"
#include "peft/cuda/elementwise.cuh"
#include "peft/cuda/gemm.cuh"
#include "peft/cuda/launch.cuh"
#include "peft/cuda/losses.cuh"
#include "peft/cuda/optimizers.cuh"
#include "peft/cuda/rows.cuh"

namespace peft::backend {

/// CUDA policy. `T` is float or double.
template <std::floating_point T>
struct cuda : peft::cuda::elementwise_kernels<T>,
              peft::cuda::matrix_kernels<T>,
              peft::cuda::row_kernels<T>,
              peft::cuda::loss_kernels<T>,
              peft::cuda::update_kernels<T> {
  using value_type = T;
  using tensor = peft::cuda::device_tensor<T>;
  using index_tensor = peft::cuda::device_tensor<std::int32_t>;
  using context = peft::cuda::context;
  static constexpr const char* name = "cuda";
};

static_assert(Backend<cuda<float>> && Backend<cuda<double>>, "backend::cuda must satisfy peft::Backend");

}  // namespace peft::backend
