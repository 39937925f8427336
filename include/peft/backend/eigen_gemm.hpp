#pragma once
/// \file GEMM on Eigen's blocked kernels with packing workspace owned by the caller.
///
/// Why: `C.noalias() = A * B` on large operands makes Eigen `malloc` and `free` its packing buffers
/// (the packed panels of A and B) on every product, and its own multithreading allocates per-thread
/// state as well. A training step does dozens of products, so the steady state was never free of
/// allocation. Here the same kernel (`general_matrix_matrix_product`, sequential path) runs on
/// grow-only buffers kept in the backend context, one pair per OpenMP thread; threads split C into
/// bands of rows or columns. After the first step at the largest shapes nothing is allocated.
///
/// This header names Eigen internals (stable across the 3.3 and 3.4 series); the backend uses it
/// unless `EIGEN_USE_BLAS` routes products to a BLAS library, which manages its own memory.

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <vector>

#include "peft/backend/host_parallel.hpp"

namespace peft::backend::detail {

/// An aligned buffer that only grows: `reserve(n)` keeps the storage when it already holds n values.
/// Moving transfers the storage; copying gives an empty buffer (a cache, not a value).
template <class T>
class grow_only_buffer {
 public:
  grow_only_buffer() = default;
  grow_only_buffer(const grow_only_buffer&) noexcept {}
  grow_only_buffer& operator=(const grow_only_buffer&) noexcept { return *this; }
  grow_only_buffer(grow_only_buffer&& o) noexcept : data_(o.data_), capacity_(o.capacity_) {
    o.data_ = nullptr;
    o.capacity_ = 0;
  }
  grow_only_buffer& operator=(grow_only_buffer&& o) noexcept {
    if (this != &o) {
      release();
      data_ = o.data_;
      capacity_ = o.capacity_;
      o.data_ = nullptr;
      o.capacity_ = 0;
    }
    return *this;
  }
  ~grow_only_buffer() { release(); }

  /// Storage for at least `n` values (contents unspecified); throws std::bad_alloc.
  T* reserve(std::size_t n) {
    if (n > capacity_) {
      release();
      data_ = static_cast<T*>(Eigen::internal::aligned_malloc(n * sizeof(T)));
      capacity_ = n;
    }
    return data_;
  }

 private:
  void release() noexcept {
    Eigen::internal::aligned_free(data_);
    data_ = nullptr;
    capacity_ = 0;
  }
  T* data_ = nullptr;
  std::size_t capacity_ = 0;
};

/// Packing buffers for Eigen's GEMM kernel, one pair per thread that may run a product.
/// `reserve_threads` must be called outside any parallel region that then uses the workspace.
template <class T>
struct gemm_workspace {
  struct pair {
    grow_only_buffer<T> a, b;
  };
  std::vector<pair> per_thread = std::vector<pair>(1);

  void reserve_threads(std::size_t n) {
    if (per_thread.size() < n) per_thread.resize(n);
  }
};

/// Eigen's `level3_blocking` with block sizes from Eigen's own heuristic and buffers from a pair.
/// Sizes are for the column-major product Eigen runs for a row-major C of m x n: its "rows" are n.
template <class T>
class workspace_blocking : public Eigen::internal::level3_blocking<T, T> {
 public:
  workspace_blocking(typename gemm_workspace<T>::pair& buffers, Eigen::Index m, Eigen::Index n, Eigen::Index k) {
    this->m_mc = n;
    this->m_nc = m;
    this->m_kc = k;
    Eigen::internal::computeProductBlockingSizes<T, T, 1>(this->m_kc, this->m_mc, this->m_nc, Eigen::Index(1));
    this->m_blockA = buffers.a.reserve(std::size_t(this->m_kc) * std::size_t(this->m_mc));
    this->m_blockB = buffers.b.reserve(std::size_t(this->m_kc) * std::size_t(this->m_nc));
  }
};

/// The operands of one row-major product C (m x n, leading dimension ldc) += alpha op(A) op(B), where
/// A and B are row-major with leading dimensions lda, ldb and `ta`/`tb` say whether each is transposed.
template <class T>
struct gemm_operands {
  bool ta, tb;
  Eigen::Index m, n, k;
  T alpha;
  const T* a;
  Eigen::Index lda;
  const T* b;
  Eigen::Index ldb;
  T* c;
  Eigen::Index ldc;
};

/// C += alpha op(A) op(B) on one thread with the given buffers.
template <class T>
void gemm_accumulate(const gemm_operands<T>& g, typename gemm_workspace<T>::pair& buffers) {
  if (g.m == 0 || g.n == 0 || g.k == 0) return;
  using Eigen::ColMajor;
  using Eigen::RowMajor;
  workspace_blocking<T> blocking(buffers, g.m, g.n, g.k);
  // A row-major matrix read transposed is a column-major one with the same leading dimension.
  auto run = [&]<int AOrder, int BOrder>() {
    Eigen::internal::general_matrix_matrix_product<Eigen::Index, T, AOrder, false, T, BOrder, false, RowMajor, 1>::run(
        g.m, g.n, g.k, g.a, g.lda, g.b, g.ldb, g.c, 1, g.ldc, g.alpha, blocking, nullptr);
  };
  if (!g.ta && !g.tb) run.template operator()<RowMajor, RowMajor>();
  else if (!g.ta) run.template operator()<RowMajor, ColMajor>();
  else if (!g.tb) run.template operator()<ColMajor, RowMajor>();
  else run.template operator()<ColMajor, ColMajor>();
}

/// The part [begin, end) of C's rows (or columns) as a product of its own.
template <class T>
gemm_operands<T> gemm_band(const gemm_operands<T>& g, bool split_rows, Eigen::Index begin, Eigen::Index end) {
  gemm_operands<T> p = g;
  if (split_rows) {
    p.m = end - begin;
    p.a = g.ta ? g.a + begin : g.a + begin * g.lda;
    p.c = g.c + begin * g.ldc;
  } else {
    p.n = end - begin;
    p.b = g.tb ? g.b + begin * g.ldb : g.b + begin;
    p.c = g.c + begin;
  }
  return p;
}

/// The calling thread's index into the workspace (0 outside parallel regions).
inline std::size_t gemm_thread_index() {
#if defined(_OPENMP)
  return std::size_t(omp_get_thread_num());
#else
  return 0;
#endif
}

/// C = beta C + alpha op(A) op(B) (beta == 0 ignores C's old contents, as BLAS does). Large products
/// are split into up to `threads` bands of C over the backend's thread team (`host_loop`), each band
/// packing into its own buffers. Inside a parallel region the product runs on the calling thread's
/// buffers, which the caller must have reserved with `ws.reserve_threads` beforehand.
template <class T>
void blocked_gemm(gemm_workspace<T>& ws, const gemm_operands<T>& g, T beta, int threads) {
  using rows_map = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, Eigen::Unaligned,
                              Eigen::OuterStride<>>;
  if (g.m == 0 || g.n == 0) return;
  // beta is applied band by band by the thread that then accumulates into the band, while it is in
  // that thread's cache (Eigen's kernel only accumulates: C += alpha op(A) op(B)).
  auto apply_beta = [beta](const gemm_operands<T>& band) {
    if (beta == T(1)) return;
    rows_map c(band.c, band.m, band.n, Eigen::OuterStride<>(band.ldc));
    if (beta == T(0)) c.setZero();
    else c *= beta;
  };
  if (g.k == 0 || g.alpha == T(0)) return apply_beta(g);

  bool nested = false;
#if defined(_OPENMP)
  nested = omp_in_parallel() != 0;
#endif
  const double work = double(g.m) * double(g.n) * double(g.k);
  // Bands are multiples of 8 rows/columns so that every band keeps whole micro-panels.
  const bool split_rows = g.m >= g.n;
  const Eigen::Index extent = split_rows ? g.m : g.n;
  const Eigen::Index parts = std::min<Eigen::Index>(threads, (extent + 7) / 8);
  if (nested || parts <= 1 || work < 64.0 * 64.0 * 64.0) {
    apply_beta(g);
    const std::size_t t = gemm_thread_index();
    if (t < ws.per_thread.size()) {
      gemm_accumulate(g, ws.per_thread[t]);
    } else {  // a parallel region that did not reserve: correct, but allocates
      typename gemm_workspace<T>::pair local;
      gemm_accumulate(g, local);
    }
    return;
  }
  ws.reserve_threads(std::size_t(parts));
  const Eigen::Index step = ((extent + parts - 1) / parts + 7) / 8 * 8;
  host_loop(std::size_t(parts), true, [&](std::size_t p) {
    const Eigen::Index begin = std::min(extent, Eigen::Index(p) * step), end = std::min(extent, begin + step);
    if (begin >= end) return;
    const gemm_operands<T> band = gemm_band(g, split_rows, begin, end);
    apply_beta(band);
    gemm_accumulate(band, ws.per_thread[p]);
  });
}

}  // namespace peft::backend::detail
