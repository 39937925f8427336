#pragma once
/// \file `peft::host_tensor<T>`: owning, 64-byte aligned, row-major tensor in host memory.
///
/// Shared by the CPU backends. `resize` keeps capacity, so a training step that reuses its buffers
/// allocates nothing once the largest batch has been seen.

#include <cstddef>
#include <new>
#include <span>
#include <vector>

#include "peft/core/shape.hpp"

namespace peft {

namespace detail {
/// Minimal allocator returning 64-byte aligned blocks (cache lines, AVX-512 loads).
template <class T>
struct aligned_allocator {
  using value_type = T;
  static constexpr std::align_val_t alignment{64};
  aligned_allocator() = default;
  template <class U>
  constexpr aligned_allocator(const aligned_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), alignment)); }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, alignment); }
  template <class U>
  friend bool operator==(const aligned_allocator&, const aligned_allocator<U>&) noexcept { return true; }
};
}  // namespace detail

/// Owning host tensor. Guarantees: contiguous row-major storage of `shape().size()` elements;
/// `resize` never shrinks the allocation; new elements are value-initialised.
template <class T>
class host_tensor {
 public:
  using value_type = T;

  host_tensor() = default;
  explicit host_tensor(const shape& s) { resize(s); }
  host_tensor(const shape& s, T fill_value) : shape_(s), data_(s.size(), fill_value) {}

  void resize(const shape& s) {
    shape_ = s;
    data_.resize(s.size());
  }

  [[nodiscard]] const peft::shape& shape() const noexcept { return shape_; }
  [[nodiscard]] std::size_t size() const noexcept { return data_.size(); }
  [[nodiscard]] std::size_t rows() const noexcept { return shape_.rows(); }
  [[nodiscard]] std::size_t cols() const noexcept { return shape_.cols(); }
  [[nodiscard]] bool empty() const noexcept { return data_.empty(); }
  [[nodiscard]] std::size_t capacity_bytes() const noexcept { return data_.capacity() * sizeof(T); }

  [[nodiscard]] T* data() noexcept { return data_.data(); }
  [[nodiscard]] const T* data() const noexcept { return data_.data(); }
  [[nodiscard]] std::span<T> span() noexcept { return {data_.data(), data_.size()}; }
  [[nodiscard]] std::span<const T> span() const noexcept { return {data_.data(), data_.size()}; }
  T& operator[](std::size_t i) noexcept { return data_[i]; }
  const T& operator[](std::size_t i) const noexcept { return data_[i]; }

 private:
  peft::shape shape_;
  std::vector<T, detail::aligned_allocator<T>> data_;
};

}  // namespace peft
