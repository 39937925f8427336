#pragma once
/// \file `peft::shape`: the extents of a dense row-major tensor (rank 0 to 4).

#include <algorithm>
#include <array>
#include <cstddef>
#include <initializer_list>
#include <ostream>
#include <string>

#include "peft/core/error.hpp"

namespace peft {

/// Extents of a dense, row-major tensor of rank <= 4. Matrix kernels view a tensor of any rank as a
/// matrix of `rows() x cols()`: the last extent is the column count, the others multiply into rows.
class shape {
 public:
  static constexpr std::size_t max_rank = 4;

  constexpr shape() = default;
  shape(std::initializer_list<std::size_t> extents) {
    if (extents.size() > max_rank)
      throw shape_error(detail::concat("shape: rank ", extents.size(), " exceeds the maximum of ", max_rank));
    std::copy(extents.begin(), extents.end(), dims_.begin());
    rank_ = extents.size();
  }

  [[nodiscard]] constexpr std::size_t rank() const noexcept { return rank_; }
  [[nodiscard]] constexpr std::size_t operator[](std::size_t i) const noexcept { return dims_[i]; }
  /// Number of elements (1 for rank 0).
  [[nodiscard]] constexpr std::size_t size() const noexcept {
    std::size_t n = 1;
    for (std::size_t i = 0; i < rank_; ++i) n *= dims_[i];
    return n;
  }
  /// Product of all extents but the last (1 for rank <= 1).
  [[nodiscard]] constexpr std::size_t rows() const noexcept {
    std::size_t n = 1;
    for (std::size_t i = 0; i + 1 < rank_; ++i) n *= dims_[i];
    return n;
  }
  /// The last extent (1 for rank 0).
  [[nodiscard]] constexpr std::size_t cols() const noexcept { return rank_ == 0 ? 1 : dims_[rank_ - 1]; }

  /// The same shape with the last extent replaced by `n` (a rank-0 shape becomes `[n]`).
  [[nodiscard]] shape with_cols(std::size_t n) const {
    shape s = *this;
    if (s.rank_ == 0) s.rank_ = 1;
    s.dims_[s.rank_ - 1] = n;
    return s;
  }

  friend constexpr bool operator==(const shape& a, const shape& b) noexcept {
    if (a.rank_ != b.rank_) return false;
    for (std::size_t i = 0; i < a.rank_; ++i)
      if (a.dims_[i] != b.dims_[i]) return false;
    return true;
  }

  [[nodiscard]] std::string str() const {
    std::string s = "[";
    for (std::size_t i = 0; i < rank_; ++i) s += (i ? ", " : "") + std::to_string(dims_[i]);
    return s + "]";
  }
  friend std::ostream& operator<<(std::ostream& os, const shape& s) { return os << s.str(); }

 private:
  std::array<std::size_t, max_rank> dims_{};
  std::size_t rank_ = 0;
};

}  // namespace peft
