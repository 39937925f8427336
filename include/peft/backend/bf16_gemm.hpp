#pragma once
/// \file Products with a bf16 matrix on CPUs with AVX512_BF16, chosen at run time.
///
/// `vdpbf16ps` multiplies 32 pairs of bf16 values and adds them to 16 fp32 sums in one instruction:
/// twice the multiply-adds of an fp32 AVX-512 FMA. With a frozen weight stored as bf16, its products
/// round the other operand (activations or output gradients) to bf16 as well, round to nearest
/// even, and accumulate in fp32: the mixed precision of PyTorch's CPU autocast. The result differs
/// from the fp32 product of the same bf16 weight by that rounding of the activations (a relative
/// 2^-9 per element at most).
///
/// Layout: the activation rows become pairs of bf16 (one 32-bit word per pair of consecutive
/// elements along the reduction); the weight is repacked per call, per thread, into panels of 32
/// output columns, each reduction pair a 128-byte line of 32 words, so the micro-kernel reads one
/// panel line and broadcasts one activation word per row. Odd reduction lengths are padded with a
/// zero, a partial last panel with zero columns (never stored).
///
/// The kernels are compiled for AVX512_BF16 with target attributes, so the rest of the program keeps
/// its own flags; `bf16_dot_available()` says whether this CPU runs them. Not compiled by nvcc or
/// off x86-64 (the callers then use the fp32 path).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "peft/backend/cpu_features.hpp"
#include "peft/backend/eigen_gemm.hpp"
#include "peft/backend/host_parallel.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__) && !defined(PEFT_NO_BF16_DOT)
#define PEFT_HAVE_BF16_DOT 1
#include <immintrin.h>
#define PEFT_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#else
#define PEFT_HAVE_BF16_DOT 0
#endif

// The functions differ with PEFT_HAVE_BF16_DOT; an inline namespace per variant keeps a program that
// mixes translation units of both kinds (nvcc's and the host compiler's) free of two different
// definitions under one name.
#if PEFT_HAVE_BF16_DOT
#define PEFT_BF16_VARIANT bf16_dot_kernels
#else
#define PEFT_BF16_VARIANT no_bf16_dot_kernels
#endif

namespace peft::backend {
inline namespace PEFT_BF16_VARIANT {

/// Whether this build has the bf16 kernels and this CPU can run them (AVX-512 F, BW, VL and BF16).
inline bool bf16_dot_available() {
#if PEFT_HAVE_BF16_DOT
  static const bool ok = cpu_has("avx512f") && cpu_has("avx512bw") && cpu_has("avx512vl") && cpu_has("avx512bf16");
  return ok;
#else
  return false;
#endif
}

/// Which kernels products with a bf16 matrix use on this CPU, for benchmark output and `--version`.
inline std::string bf16_kernels() {
  return bf16_dot_available() ? "bf16 weights: AVX512_BF16 dot products (activations rounded to bf16, fp32 sums)"
                              : "bf16 weights: widened to fp32 tile by tile (no AVX512_BF16 on this CPU or build)";
}
}  // inline namespace PEFT_BF16_VARIANT

namespace detail {

/// Buffers of the bf16 products: the activation pairs (shared by the threads) and one panel buffer
/// per thread. Grow-only, so a steady state allocates nothing.
struct bf16_workspace {
  grow_only_buffer<std::uint32_t> pairs;
  std::vector<grow_only_buffer<std::uint32_t>> panels = std::vector<grow_only_buffer<std::uint32_t>>(1);
};

/// Which operand of c = a op(W) the bf16 matrix W (rows x cols, row-major bf16 bits) is:
/// `transposed` gives c (m x rows) = a (m x cols) W^T, otherwise c (m x cols) = a (m x rows) W.
struct bf16_matrix_view {
  const std::uint16_t* bits;
  std::size_t rows, cols;
  bool transposed;
  [[nodiscard]] std::size_t outputs() const { return transposed ? rows : cols; }
  [[nodiscard]] std::size_t reduction() const { return transposed ? cols : rows; }
};

inline namespace PEFT_BF16_VARIANT {
#if PEFT_HAVE_BF16_DOT
inline constexpr std::size_t bf16_panel = 32;  // output columns per panel (two vectors of 16 sums)

/// Rows [r0, r1) of a (leading dimension lda, k columns) as bf16 pairs, kp = ceil(k / 2) words a row.
PEFT_BF16_TARGET inline void bf16_pack_rows(const float* a, std::size_t lda, std::size_t k, std::size_t r0, std::size_t r1,
                                            std::uint32_t* pairs) {
  const std::size_t kp = (k + 1) / 2;
  for (std::size_t i = r0; i < r1; ++i) {
    const float* src = a + i * lda;
    auto* dst = reinterpret_cast<std::uint16_t*>(pairs + i * kp);
    std::size_t j = 0;
    for (; j + 16 <= k; j += 16) _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + j)));
    if (j < k) {  // the tail, zero-padded to a whole pair
      const auto left = static_cast<unsigned>(k - j);
      const __mmask16 load = static_cast<__mmask16>((1u << left) - 1u);
      const __m256i h = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(load, src + j));
      const unsigned words = (left + 1) / 2;
      _mm256_mask_storeu_epi32(dst + j, static_cast<__mmask8>((1u << words) - 1u), h);
    }
  }
}

/// Panel `p` of W (outputs [32 p, 32 p + 32)) as kp lines of 32 pair words.
PEFT_BF16_TARGET inline void bf16_pack_panel(const bf16_matrix_view& w, std::size_t p, std::uint32_t* panel) {
  const std::size_t n = w.outputs(), k = w.reduction(), kp = (k + 1) / 2;
  const std::size_t c0 = p * bf16_panel, width = std::min(bf16_panel, n - c0);
  if (width < bf16_panel) std::memset(panel, 0, kp * bf16_panel * sizeof(std::uint32_t));
  if (w.transposed) {  // output j is row c0 + j of W; its pairs are consecutive elements of that row
    for (std::size_t j = 0; j < width; ++j) {
      const std::uint16_t* row = w.bits + (c0 + j) * w.cols;
      for (std::size_t q = 0; q < k / 2; ++q) {
        std::uint32_t word;
        std::memcpy(&word, row + 2 * q, sizeof word);
        panel[q * bf16_panel + j] = word;
      }
      if (k % 2) panel[(kp - 1) * bf16_panel + j] = row[k - 1];
    }
  } else {  // output j is column c0 + j of W; pair q holds rows 2q and 2q + 1
    for (std::size_t q = 0; q < kp; ++q) {
      const std::uint16_t* lo = w.bits + 2 * q * w.cols + c0;
      const std::uint16_t* hi = 2 * q + 1 < k ? lo + w.cols : nullptr;
      std::uint32_t* line = panel + q * bf16_panel;
      for (std::size_t j = 0; j < width; ++j) line[j] = std::uint32_t(lo[j]) | (hi ? std::uint32_t(hi[j]) << 16 : 0u);
    }
  }
}

/// c[MR rows, up to 32 columns] = beta c + alpha (a rows) . panel, where `a` points at the rows'
/// pair words (stride kp) and `width` columns are stored.
template <int MR>
PEFT_BF16_TARGET inline void bf16_micro(std::size_t kp, const std::uint32_t* a, const std::uint32_t* panel, float* c,
                                        std::size_t ldc, std::size_t width, float alpha, float beta) {
  __m512 acc[MR][2];
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (std::size_t q = 0; q < kp; ++q) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(panel + q * bf16_panel);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(panel + q * bf16_panel + 16);
    for (int i = 0; i < MR; ++i) {
      const __m512bh x = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[std::size_t(i) * kp + q]));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], x, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], x, b1);
    }
  }
  const __mmask16 m0 = width >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << width) - 1u);
  const __mmask16 m1 = width >= 32 ? __mmask16(0xFFFF) : width > 16 ? __mmask16((1u << (width - 16)) - 1u) : __mmask16(0);
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  for (int i = 0; i < MR; ++i) {
    float* row = c + std::size_t(i) * ldc;
    for (int h = 0; h < 2; ++h) {
      const __mmask16 m = h ? m1 : m0;
      if (!m) continue;
      __m512 v = _mm512_mul_ps(va, acc[i][h]);
      if (beta != 0.f) v = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, row + 16 * h), v);
      _mm512_mask_storeu_ps(row + 16 * h, m, v);
    }
  }
}

/// Panels [p0, p1) against every row of the activation pairs: rows in blocks that stay in L2 while
/// each of the thread's panels passes over them.
PEFT_BF16_TARGET inline void bf16_panels(const bf16_matrix_view& w, std::size_t m, const std::uint32_t* pairs, std::size_t p0,
                                         std::size_t p1, std::uint32_t* panels, float alpha, float beta, float* c,
                                         std::size_t ldc) {
  const std::size_t n = w.outputs(), kp = (w.reduction() + 1) / 2, line = kp * bf16_panel;
  for (std::size_t p = p0; p < p1; ++p) bf16_pack_panel(w, p, panels + (p - p0) * line);
  constexpr std::size_t row_block = 64;
  for (std::size_t r0 = 0; r0 < m; r0 += row_block) {
    const std::size_t r1 = std::min(m, r0 + row_block);
    for (std::size_t p = p0; p < p1; ++p) {
      const std::size_t c0 = p * bf16_panel, width = std::min(bf16_panel, n - c0);
      const std::uint32_t* panel = panels + (p - p0) * line;
      std::size_t i = r0;
      for (; i + 8 <= r1; i += 8) bf16_micro<8>(kp, pairs + i * kp, panel, c + i * ldc + c0, ldc, width, alpha, beta);
      for (; i < r1; ++i) bf16_micro<1>(kp, pairs + i * kp, panel, c + i * ldc + c0, ldc, width, alpha, beta);
    }
  }
}
#endif

/// c (m x w.outputs(), leading dimension ldc) = beta c + alpha a op(W), a (m x w.reduction(),
/// leading dimension lda) in fp32, on the thread team. Requires `bf16_dot_available()`.
inline void bf16_gemm(bf16_workspace& ws, std::size_t m, float alpha, const float* a, std::size_t lda, const bf16_matrix_view& w,
                      float beta, float* c, std::size_t ldc) {
#if PEFT_HAVE_BF16_DOT
  const std::size_t k = w.reduction(), kp = (k + 1) / 2, n = w.outputs();
  const std::size_t panels = (n + bf16_panel - 1) / bf16_panel;
  std::uint32_t* pairs = ws.pairs.reserve(m * kp);
  const auto threads = std::size_t(std::max(1, Eigen::nbThreads()));
  if (ws.panels.size() < threads) ws.panels.resize(threads);
  const bool parallel = double(m) * double(n) * double(k) > double(1 << 18);
  // Activation rows to pairs, split by rows; then panels split over the threads.
  const std::size_t row_parts = parallel ? std::min(threads, m) : 1, row_step = (m + row_parts - 1) / row_parts;
  host_loop(row_parts, row_parts > 1, [&](std::size_t t) {
    const std::size_t r0 = std::min(m, t * row_step), r1 = std::min(m, r0 + row_step);
    if (r0 < r1) bf16_pack_rows(a, lda, k, r0, r1, pairs);
  });
  const std::size_t parts = parallel ? std::min(threads, panels) : 1, step = (panels + parts - 1) / parts;
  for (std::size_t t = 0; t < parts; ++t) ws.panels[t].reserve(step * kp * bf16_panel);
  host_loop(parts, parts > 1, [&](std::size_t t) {
    const std::size_t p0 = std::min(panels, t * step), p1 = std::min(panels, p0 + step);
    if (p0 < p1) bf16_panels(w, m, pairs, p0, p1, ws.panels[t].reserve(step * kp * bf16_panel), alpha, beta, c, ldc);
  });
#else
  (void)ws, (void)m, (void)alpha, (void)a, (void)lda, (void)w, (void)beta, (void)c, (void)ldc;
  throw error("bf16_gemm: this build has no AVX512_BF16 kernels");
#endif
}

}  // inline namespace PEFT_BF16_VARIANT
}  // namespace detail
}  // namespace peft::backend
