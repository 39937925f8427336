#pragma once
/// \file Parallel loops of the CPU backend over OpenMP.
///
/// Every parallel region asks for the same team size, Eigen's thread count (the eigen context's
/// `threads`, else OpenMP's default): the OpenMP runtime reuses its last team only for the same size
/// and allocates a fresh team for every region it serialises, so loops too small for threads run
/// outside any region instead of through `if(false)`. Inside a region, loops run serially.

#include <Eigen/Core>
#include <cstddef>
#include <cstdint>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace peft::backend::detail {

/// Runs `f(i)` for i in [0, n), over a team of Eigen's thread count when `parallel` (and not already
/// inside a parallel region), serially otherwise.
template <class F>
void host_loop(std::size_t n, bool parallel, F&& f) {
  const auto count = static_cast<std::int64_t>(n);
#if defined(_OPENMP)
  const int threads = Eigen::nbThreads();
  if (parallel && threads > 1 && !omp_in_parallel()) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (std::int64_t i = 0; i < count; ++i) f(static_cast<std::size_t>(i));
    return;
  }
#endif
  (void)parallel;
  for (std::int64_t i = 0; i < count; ++i) f(static_cast<std::size_t>(i));
}

/// Runs `f(i)` for i in [0, n), in parallel when the work (n times `cost` elements per call) is large
/// enough to pay for threads.
template <class F>
void host_parallel_for(std::size_t n, F&& f, std::size_t cost = 1) {
  host_loop(n, n * cost > 32768, f);
}

/// Runs `f(begin, end)` over [0, n) cut into one contiguous range per thread (ranges start at
/// multiples of 16, so vector loops inside stay aligned) when n is at least `min_parallel`, and as
/// one range otherwise. For element-wise sweeps that vectorise within a range.
template <class F>
void host_parallel_ranges(std::size_t n, F&& f, std::size_t min_parallel = 32768) {
  const auto threads = static_cast<std::size_t>(Eigen::nbThreads());
  if (n < min_parallel || threads <= 1) {
    if (n) f(std::size_t(0), n);
    return;
  }
  const std::size_t step = ((n + threads - 1) / threads + 15) / 16 * 16;
  host_loop(threads, true, [&](std::size_t t) {
    const std::size_t begin = t * step < n ? t * step : n, end = begin + step < n ? begin + step : n;
    if (begin < end) f(begin, end);
  });
}

/// Runs `f(i)` for i in [0, n) in parallel whenever there are two or more calls (each call is
/// substantial work).
template <class F>
void host_parallel_for_always(std::size_t n, F&& f) {
  host_loop(n, n > 1, f);
}

}  // namespace peft::backend::detail
