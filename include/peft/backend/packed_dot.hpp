#pragma once
/// \file Dot products of a vector with one row of a packed matrix, straight from the blocks: the
/// row is never written out as floats. This is the decoding case (one token at a time), where a
/// product touches every weight once and the cost is reading them; fusing the dequantization into
/// the dot product halves the memory traffic of dequantize-then-multiply.
///
/// Per block the scale is factored out of the sum (Q4_1: sum_j x_j (d q_j + m) = d sum_j x_j q_j +
/// m sum_j x_j), so the inner loops are integer-to-float conversions and multiply-adds that the
/// compiler vectorises. Results differ from the dequantize-then-multiply order only in rounding.

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "peft/core/storage_format.hpp"

namespace peft::backend::detail {

/// Sums of each 32-element chunk of x (cols / 32 of them; cols a multiple of 32).
template <class T>
void chunk_sums(const T* x, std::size_t cols, T* sums) {
  for (std::size_t c = 0; c < cols / 32; ++c) {
    T s = 0;
    for (std::size_t j = 0; j < 32; ++j) s += x[c * 32 + j];
    sums[c] = s;
  }
}

/// sum_j x[j] * W[row, j] for one row of `cols` elements in format f. `sums` holds `chunk_sums(x)`
/// for the formats with per-block offsets (Q4_0, Q4_1, Q4_K); it may be null for the others.
/// Partial sums live in a fixed array of lanes, one per position in a block, so that the loops are
/// element-wise and vectorise without reassociating a reduction.
template <class T>
T packed_row_dot(storage_format f, const std::byte* row, std::size_t cols, const T* x, const T* sums) {
  using peft::detail::load_half;
  constexpr std::size_t L = 32;
  T lane[L] = {};
  T offsets = 0;  // per-block offset terms (scalar)
  switch (f) {
    case storage_format::f32:
    case storage_format::f16:
    case storage_format::bf16: {
      const std::size_t width = f == storage_format::f32 ? 4 : 2, whole = cols / L * L;
      T w[L];
      for (std::size_t c = 0; c < whole; c += L) {
        for (std::size_t j = 0; j < L; ++j) {
          const std::byte* p = row + (c + j) * width;
          if (f == storage_format::f32) {
            float v;
            std::memcpy(&v, p, 4);
            w[j] = T(v);
          } else {
            w[j] = T(f == storage_format::f16 ? load_half(p) : bf16_to_float(peft::detail::load_u16(p)));
          }
        }
        for (std::size_t j = 0; j < L; ++j) lane[j] += x[c + j] * w[j];
      }
      for (std::size_t j = whole; j < cols; ++j) {
        const std::byte* p = row + j * width;
        float v;
        if (f == storage_format::f32) std::memcpy(&v, p, 4);
        else v = f == storage_format::f16 ? load_half(p) : bf16_to_float(peft::detail::load_u16(p));
        offsets += x[j] * T(v);
      }
      break;
    }
    case storage_format::q8_0:
      for (std::size_t b = 0; b < cols / 32; ++b, row += 34, x += 32) {
        const auto* q = reinterpret_cast<const std::int8_t*>(row + 2);
        const T d = T(load_half(row));
        for (std::size_t j = 0; j < 32; ++j) lane[j] += d * (x[j] * T(q[j]));
      }
      break;
    case storage_format::q4_0:
    case storage_format::q4_1: {
      const bool has_min = f == storage_format::q4_1;
      const std::size_t bytes = has_min ? 20 : 18, data = has_min ? 4 : 2;
      for (std::size_t b = 0; b < cols / 32; ++b, row += bytes, x += 32) {
        const auto* q = reinterpret_cast<const std::uint8_t*>(row + data);
        const T d = T(load_half(row));
        for (std::size_t j = 0; j < 16; ++j) {
          lane[j] += d * (x[j] * T(q[j] & 0x0F));
          lane[j + 16] += d * (x[j + 16] * T(q[j] >> 4));
        }
        offsets += has_min ? T(load_half(row + 2)) * sums[b] : T(-8) * d * sums[b];
      }
      break;
    }
    case storage_format::q4_k:
      for (std::size_t b = 0; b < cols / 256; ++b, row += 144, x += 256, sums += 8) {
        const T d = T(load_half(row)), dmin = T(load_half(row + 2));
        const std::byte* s = row + 4;
        const auto* qs = reinterpret_cast<const std::uint8_t*>(row + 16);
        for (std::size_t sb = 0; sb < 8; ++sb) {
          std::uint8_t sc, mn;
          peft::detail::q4_k_scale_min(s, sb, sc, mn);
          const std::uint8_t* q = qs + (sb / 2) * 32;
          const int shift = (sb % 2) * 4;
          const T ds = d * T(sc);
          const T* xs = x + sb * 32;
          for (std::size_t j = 0; j < 32; ++j) lane[j] += ds * (xs[j] * T((q[j] >> shift) & 0x0F));
          offsets -= dmin * T(mn) * sums[sb];
        }
      }
      break;
    case storage_format::q6_k:
      for (std::size_t b = 0; b < cols / 256; ++b, row += 210, x += 256) {
        const auto* ql = reinterpret_cast<const std::uint8_t*>(row);
        const auto* qh = reinterpret_cast<const std::uint8_t*>(row + 128);
        const auto* sc = reinterpret_cast<const std::int8_t*>(row + 192);
        const T d = T(load_half(row + 208));
        for (std::size_t part = 0; part < 8; ++part) {  // 32 elements: half, then which quarter
          const std::size_t half = part / 4, quarter = part % 4, e0 = half * 128 + quarter * 32;
          const std::uint8_t* lo = ql + half * 64 + (quarter % 2) * 32;
          const std::uint8_t* hi = qh + half * 32;
          const int lo_shift = int(quarter / 2) * 4, hi_shift = int(quarter) * 2;
          const T d0 = d * T(sc[e0 / 16]), d1 = d * T(sc[e0 / 16 + 1]);
          for (std::size_t j = 0; j < 32; ++j) {
            const int q = (((lo[j] >> lo_shift) & 0x0F) | (((hi[j] >> hi_shift) & 0x03) << 4)) - 32;
            lane[j] += (j < 16 ? d0 : d1) * (x[e0 + j] * T(q));
          }
        }
      }
      break;
  }
  T acc = offsets;
  for (std::size_t j = 0; j < L; ++j) acc += lane[j];
  return acc;
}

}  // namespace peft::backend::detail
