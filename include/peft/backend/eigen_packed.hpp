#pragma once
/// \file Products with a packed (fp16, bf16 or block-quantized) matrix on the CPU: W is never
/// expanded as a whole. Each thread dequantizes a tile of W into its own buffer (a few hundred KB,
/// so it stays in cache) and multiplies it with Eigen's kernel; tiles cover disjoint parts of the
/// output, so threads never add into the same element.

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "peft/backend/bf16_gemm.hpp"
#include "peft/backend/eigen_gemm.hpp"
#include "peft/backend/host_parallel.hpp"
#include "peft/backend/packed_dot.hpp"
#include "peft/core/packed_matrix.hpp"

namespace peft::backend::detail {

/// Per-thread tile buffers and GEMM packing buffers of packed products.
template <class T>
struct packed_workspace {
  std::vector<grow_only_buffer<T>> tiles = std::vector<grow_only_buffer<T>>(1);
  grow_only_buffer<T> sums;  // chunk sums of the input rows (decoding)
  gemm_workspace<T> gemm;
  bf16_workspace bf16;  // products with bf16 matrices on AVX512_BF16 (bf16_gemm.hpp)
  void reserve_threads(std::size_t n) {
    if (tiles.size() < n) tiles.resize(n);
    gemm.reserve_threads(n);
  }
};

/// Values per tile: about 64K (256 KB of floats), at least one block row or column.
inline constexpr std::size_t packed_tile_values = 1u << 16;

/// Runs c = beta c + alpha a op(W) with the AVX512_BF16 kernels when W is bf16, T is float, the
/// caller allows it (`bf16_dot`), the CPU has them and W's storage is 2-byte aligned; returns
/// whether it did.
template <class T>
bool try_bf16_gemm(packed_workspace<T>& ws, bool bf16_dot, bool transposed, std::size_t m, T alpha, const T* a, std::size_t lda,
                   const packed_matrix& w, T beta, T* c, std::size_t ldc) {
  if constexpr (std::is_same_v<T, float>) {
    const auto* bits = reinterpret_cast<const std::uint16_t*>(w.bytes().data());
    if (!bf16_dot || w.format() != storage_format::bf16 || reinterpret_cast<std::uintptr_t>(bits) % alignof(std::uint16_t) != 0 ||
        !bf16_dot_available())
      return false;
    bf16_gemm(ws.bf16, m, alpha, a, lda, bf16_matrix_view{bits, w.rows(), w.cols(), transposed}, beta, c, ldc);
    return true;
  } else {
    (void)ws, (void)bf16_dot, (void)transposed, (void)m, (void)alpha, (void)a, (void)lda, (void)w, (void)beta, (void)c, (void)ldc;
    return false;
  }
}

/// c (m x n, leading dimension ldc) = beta c + alpha a (m x k) W^T for W (n x k) packed: tiles of
/// W's rows, each a band of c's columns. For a few rows of `a` (token-by-token decoding) each row
/// of W is dotted with them straight from its blocks (packed_dot.hpp), with no tile at all.
template <class T>
void packed_gemm_nt(packed_workspace<T>& ws, std::size_t m, T alpha, const T* a, std::size_t lda, const packed_matrix& w,
                    T beta, T* c, std::size_t ldc, bool bf16_dot = true) {
  const std::size_t n = w.rows(), k = w.cols();
  const std::size_t tile_rows = std::clamp<std::size_t>(packed_tile_values / k / 8 * 8, 8, n);
  const std::size_t tiles = (n + tile_rows - 1) / tile_rows;
  const int threads = Eigen::nbThreads();
  ws.reserve_threads(std::size_t(std::max(threads, 1)));
  const bool parallel = tiles > 1 && double(m) * double(n) * double(k) > 1 << 18;
  if (m <= 4) {  // decoding: dot products straight from the blocks
    const std::size_t chunks = k % 32 == 0 ? k / 32 : 0;
    T* sums = ws.sums.reserve(std::max<std::size_t>(1, m * chunks));
    for (std::size_t i = 0; i < m && chunks; ++i) chunk_sums(a + i * lda, k, sums + i * chunks);
    host_loop(tiles, parallel, [&](std::size_t t) {
      const std::size_t r0 = t * tile_rows, r1 = std::min(n, r0 + tile_rows);
      for (std::size_t r = r0; r < r1; ++r)
        for (std::size_t i = 0; i < m; ++i) {
          const T dot = packed_row_dot(w.format(), w.bytes().data() + r * w.row_bytes(), k, a + i * lda, sums + i * chunks);
          T& out = c[i * ldc + r];
          out = beta == T(0) ? alpha * dot : beta * out + alpha * dot;
        }
    });
    return;
  }
  if (try_bf16_gemm(ws, bf16_dot, true, m, alpha, a, lda, w, beta, c, ldc)) return;
  host_loop(tiles, parallel, [&](std::size_t t) {
    const std::size_t r0 = t * tile_rows, r1 = std::min(n, r0 + tile_rows), rows = r1 - r0;
    T* tile = ws.tiles[gemm_thread_index()].reserve(rows * k);
    w.dequantize_rows(r0, r1, tile);
    blocked_gemm(ws.gemm,
                 gemm_operands<T>{false, true, Eigen::Index(m), Eigen::Index(rows), Eigen::Index(k), alpha, a,
                                  Eigen::Index(lda), tile, Eigen::Index(k), c + r0, Eigen::Index(ldc)},
                 beta, 1);
  });
}

/// c (m x k, leading dimension ldc) = beta c + alpha a (m x n) W for W (n x k) packed: tiles of W's
/// columns (whole blocks), each a band of c's columns.
template <class T>
void packed_gemm_nn(packed_workspace<T>& ws, std::size_t m, T alpha, const T* a, std::size_t lda, const packed_matrix& w,
                    T beta, T* c, std::size_t ldc, bool bf16_dot = true) {
  if (m > 4 && try_bf16_gemm(ws, bf16_dot, false, m, alpha, a, lda, w, beta, c, ldc)) return;
  const std::size_t n = w.rows(), k = w.cols(), be = w.block_elements();
  const std::size_t tile_cols = std::clamp<std::size_t>(packed_tile_values / n / be * be, be, k);
  const std::size_t tiles = (k + tile_cols - 1) / tile_cols;
  const int threads = Eigen::nbThreads();
  ws.reserve_threads(std::size_t(std::max(threads, 1)));
  host_loop(tiles, tiles > 1 && double(m) * double(n) * double(k) > 1 << 18, [&](std::size_t t) {
    const std::size_t c0 = t * tile_cols, c1 = std::min(k, c0 + tile_cols), cols = c1 - c0;
    T* tile = ws.tiles[gemm_thread_index()].reserve(n * cols);
    w.dequantize_columns(c0, c1, tile);
    blocked_gemm(ws.gemm,
                 gemm_operands<T>{false, false, Eigen::Index(m), Eigen::Index(cols), Eigen::Index(n), alpha, a,
                                  Eigen::Index(lda), tile, Eigen::Index(cols), c + c0, Eigen::Index(ldc)},
                 beta, 1);
  });
}

}  // namespace peft::backend::detail
