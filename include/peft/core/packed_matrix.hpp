#pragma once
/// \file `peft::packed_matrix`: a frozen row-major matrix kept in its storage format (fp16, bf16 or
/// block-quantized) in host memory, typically a view into a memory-mapped checkpoint. Products with
/// it dequantize tiles on the fly (`gemm_packed` of the CPU backends), so a quantized model stays
/// about the size of its file.

#include <algorithm>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/core/shape.hpp"
#include "peft/core/storage_format.hpp"

namespace peft {

/// A rows x cols matrix in `format`, each row a whole number of blocks (GGUF's layout: a row is
/// `ne0 = cols` elements). Guarantees: `bytes().size() == rows * row_bytes()`; the storage stays
/// alive as long as any copy of the matrix (copies share it).
class packed_matrix {
 public:
  packed_matrix() = default;
  /// Wraps `bytes` (owned by `owner`, or by the caller when `owner` is null and the bytes outlive the
  /// matrix). Throws `shape_error` naming `name` when cols is not a whole number of blocks or the
  /// byte count is not rows x row_bytes.
  packed_matrix(storage_format format, std::size_t rows, std::size_t cols, std::span<const std::byte> bytes,
                std::shared_ptr<const void> owner, std::string name = "matrix")
      : format_(format), rows_(rows), cols_(cols), bytes_(bytes), owner_(std::move(owner)), name_(std::move(name)) {
    const auto row = storage_bytes(format, cols);
    if (!row || rows == 0 || cols == 0)
      throw shape_error(detail::concat("packed matrix '", name_, "': ", cols, " columns are not a positive multiple of the ",
                                       format_traits(format).block_elements, "-element blocks of ", format_traits(format).name));
    row_bytes_ = *row;
    if (row_bytes_ != 0 && rows > SIZE_MAX / row_bytes_)
      throw shape_error(detail::concat("packed matrix '", name_, "': ", rows, " x ", cols, " overflows"));
    if (bytes.size() != rows * row_bytes_)
      throw shape_error(detail::concat("packed matrix '", name_, "': ", bytes.size(), " bytes for ", rows, " x ", cols, " ",
                                       format_traits(format).name, " (", rows * row_bytes_, " expected)"));
  }

  /// Encodes a dense row-major matrix into `format` (F32, F16, BF16 or Q8_0), owning the result.
  static packed_matrix encode(std::span<const float> values, std::size_t rows, std::size_t cols, storage_format format,
                              std::string name = "matrix") {
    if (values.size() != rows * cols)
      throw shape_error(detail::concat("packed matrix '", name, "': ", values.size(), " values for ", rows, " x ", cols));
    const auto row = storage_bytes(format, cols);
    if (!row)
      throw shape_error(detail::concat("packed matrix '", name, "': ", cols, " columns are not a multiple of the ",
                                       format_traits(format).block_elements, "-element blocks of ", format_traits(format).name));
    auto storage = std::make_shared<std::vector<std::byte>>(rows * *row);
    const std::size_t blocks = cols / format_traits(format).block_elements;
    for (std::size_t r = 0; r < rows; ++r)
      if (!quantize_blocks(format, values.data() + r * cols, blocks, storage->data() + r * *row))
        throw config_error(detail::concat("packed matrix '", name, "': cannot encode into ", format_traits(format).name,
                                          " (writable formats: F32, F16, BF16, Q8_0)"));
    const std::span<const std::byte> view(storage->data(), storage->size());
    return packed_matrix(format, rows, cols, view, std::move(storage), std::move(name));
  }

  /// A copy whose row i is this matrix's row `order[i]` (rows are quantized independently, so a
  /// row permutation is exact). Throws `shape_error` unless `order` is a permutation of the rows.
  [[nodiscard]] packed_matrix with_rows(std::span<const std::size_t> order) const {
    std::vector<bool> seen(rows_, false);
    if (order.size() != rows_) throw shape_error(detail::concat("packed matrix '", name_, "': ", order.size(), " rows for ", rows_));
    for (auto r : order) {
      if (r >= rows_ || seen[r]) throw shape_error(detail::concat("packed matrix '", name_, "': row order is not a permutation"));
      seen[r] = true;
    }
    auto storage = std::make_shared<std::vector<std::byte>>(bytes_.size());
    for (std::size_t i = 0; i < rows_; ++i)
      std::copy_n(bytes_.data() + order[i] * row_bytes_, row_bytes_, storage->data() + i * row_bytes_);
    const std::span<const std::byte> view(storage->data(), storage->size());
    return packed_matrix(format_, rows_, cols_, view, std::move(storage), name_);
  }

  [[nodiscard]] storage_format format() const noexcept { return format_; }
  [[nodiscard]] std::size_t rows() const noexcept { return rows_; }
  [[nodiscard]] std::size_t cols() const noexcept { return cols_; }
  [[nodiscard]] peft::shape shape() const { return peft::shape{rows_, cols_}; }
  [[nodiscard]] bool empty() const noexcept { return rows_ == 0; }
  [[nodiscard]] std::size_t row_bytes() const noexcept { return row_bytes_; }
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return bytes_; }
  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] std::size_t block_elements() const noexcept { return format_traits(format_).block_elements; }

  /// Rows [r0, r1) dequantized into `out` ((r1 - r0) x cols, row-major).
  template <class T>
  void dequantize_rows(std::size_t r0, std::size_t r1, T* out) const {
    const std::size_t blocks = cols_ / block_elements();
    for (std::size_t r = r0; r < r1; ++r) dequantize_blocks(format_, bytes_.data() + r * row_bytes_, blocks, out + (r - r0) * cols_);
  }
  /// Columns [c0, c1) of every row into `out` (rows x (c1 - c0)); c0 and c1 must be block boundaries.
  template <class T>
  void dequantize_columns(std::size_t c0, std::size_t c1, T* out) const {
    const std::size_t be = block_elements(), bb = format_traits(format_).block_bytes, w = c1 - c0;
    for (std::size_t r = 0; r < rows_; ++r)
      dequantize_blocks(format_, bytes_.data() + r * row_bytes_ + (c0 / be) * bb, w / be, out + r * w);
  }
  /// The whole matrix as T.
  template <class T>
  std::vector<T> dequantize() const {
    std::vector<T> out(rows_ * cols_);
    dequantize_rows(0, rows_, out.data());
    return out;
  }

 private:
  storage_format format_ = storage_format::f32;
  std::size_t rows_ = 0, cols_ = 0, row_bytes_ = 0;
  std::span<const std::byte> bytes_;
  std::shared_ptr<const void> owner_;
  std::string name_;
};

}  // namespace peft
