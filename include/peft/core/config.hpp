#pragma once
/// \file Build-wide macros. Safe to include from host-only and nvcc-compiled code alike.

/// Marks a function callable from host and device code under nvcc, and plain `inline` otherwise,
/// so CPU translation units never see CUDA keywords.
#if defined(__CUDACC__)
#define PEFT_HOST_DEVICE __host__ __device__ inline
#else
#define PEFT_HOST_DEVICE inline
#endif

#define PEFT_VERSION_MAJOR 0
#define PEFT_VERSION_MINOR 1
#define PEFT_VERSION_PATCH 0
