#pragma once
/// \file `peft::cuda::device_tensor<T>`: owning, row-major tensor in GPU memory.

#include <cuda_runtime.h>

#include <cstddef>
#include <string>
#include <utility>

#include "peft/core/error.hpp"
#include "peft/core/shape.hpp"

namespace peft::cuda {

/// Throws `peft::error` naming the call and CUDA's message when `status` is not cudaSuccess.
inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw error(peft::detail::concat("cuda: ", what, " failed: ", cudaGetErrorName(status), " (",
                                     cudaGetErrorString(status), ")"));
}

/// Owning device tensor. Guarantees as `host_tensor`: contiguous row-major storage, `resize` keeps
/// the allocation when it is large enough (no cudaMalloc in a steady-state step); new elements are
/// not initialised. Copies are deep (device to device).
template <class T>
class device_tensor {
 public:
  using value_type = T;

  device_tensor() = default;
  explicit device_tensor(const shape& s) { resize(s); }
  device_tensor(const device_tensor& o) {
    resize(o.shape_);
    if (size()) check(cudaMemcpy(data_, o.data_, size() * sizeof(T), cudaMemcpyDeviceToDevice), "cudaMemcpy (copy)");
  }
  device_tensor(device_tensor&& o) noexcept
      : shape_(o.shape_), data_(std::exchange(o.data_, nullptr)), capacity_(std::exchange(o.capacity_, 0)) {
    o.shape_ = {};
  }
  device_tensor& operator=(const device_tensor& o) {
    if (this != &o) {
      resize(o.shape_);
      if (size()) check(cudaMemcpy(data_, o.data_, size() * sizeof(T), cudaMemcpyDeviceToDevice), "cudaMemcpy (assign)");
    }
    return *this;
  }
  device_tensor& operator=(device_tensor&& o) noexcept {
    if (this != &o) {
      release();
      shape_ = std::exchange(o.shape_, {});
      data_ = std::exchange(o.data_, nullptr);
      capacity_ = std::exchange(o.capacity_, 0);
    }
    return *this;
  }
  ~device_tensor() { release(); }

  void resize(const shape& s) {
    if (s.size() > capacity_) {
      T* p = nullptr;
      check(cudaMalloc(&p, s.size() * sizeof(T)), "cudaMalloc");
      if (data_ && size()) cudaMemcpy(p, data_, size() * sizeof(T), cudaMemcpyDeviceToDevice);
      release();
      data_ = p;
      capacity_ = s.size();
    }
    shape_ = s;
  }

  [[nodiscard]] const peft::shape& shape() const noexcept { return shape_; }
  [[nodiscard]] std::size_t size() const noexcept { return shape_.rank() == 0 && !data_ ? 0 : shape_.size(); }
  [[nodiscard]] std::size_t rows() const noexcept { return shape_.rows(); }
  [[nodiscard]] std::size_t cols() const noexcept { return shape_.cols(); }
  [[nodiscard]] bool empty() const noexcept { return size() == 0; }
  [[nodiscard]] T* data() noexcept { return data_; }
  [[nodiscard]] const T* data() const noexcept { return data_; }

 private:
  void release() noexcept {
    if (data_) cudaFree(data_);
    data_ = nullptr;
    capacity_ = 0;
  }
  peft::shape shape_;
  T* data_ = nullptr;
  std::size_t capacity_ = 0;
};

}  // namespace peft::cuda
