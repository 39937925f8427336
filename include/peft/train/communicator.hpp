#pragma once
/// \file Communicator policies for data-parallel training: what the trainer needs from the processes
/// that train one model together, and the single-process policy (the default), which needs nothing.
/// `train/mpi_communicator.hpp` implements it over MPI, `peft/cuda/nccl_communicator.cuh` over NCCL.
///
/// Data parallelism as the trainer runs it: every process builds the same global batches (same data,
/// same seed), trains on its rows of each, and the trainable gradients are summed once per optimizer
/// step. Frozen weights never travel. Each process keeps the whole optimizer state (PEFT's is small:
/// replicating it costs no communication and keeps a checkpoint independent of the process count).

#include <concepts>
#include <cstddef>
#include <span>
#include <string>

namespace peft::train {

/// A group of processes training one model. Requirements: `rank()` in [0, size()), `size()` >= 1;
/// `sum(std::span<double>)` replaces the values of every process by their sum over all processes,
/// in place, with the same result on every process (bit for bit: the trainer relies on it to keep the
/// replicas identical); `max(std::span<double>)` likewise with the maximum; `broadcast(std::string&,
/// root)` gives every process the root's string. Every process must make the same calls in the same
/// order (collectives).
template <class C>
concept Communicator = requires(C& c, std::span<double> values, std::string& text) {
  { c.rank() } -> std::convertible_to<std::size_t>;
  { c.size() } -> std::convertible_to<std::size_t>;
  c.sum(values);
  c.max(values);
  c.broadcast(text, std::size_t{});
};

/// A communicator that also sums a backend's tensors where they live, with no trip through the host
/// (NCCL on GPUs: `peft/cuda/nccl_communicator.cuh`). Requirement: `sum_tensors(ctx, tensors)` replaces
/// every tensor of the span by its sum over the processes, with the same bits on every process, as
/// one collective (all processes pass tensors of the same shapes in the same order). The trainer sums
/// the trainable gradients this way when it can.
template <class C, class B>
concept TensorSumCommunicator =
    Communicator<C> && requires(C& c, typename B::context& ctx, std::span<typename B::tensor* const> tensors) {
      c.sum_tensors(ctx, tensors);
    };

/// One process: every collective is the identity.
struct single_process {
  [[nodiscard]] static constexpr std::size_t rank() noexcept { return 0; }
  [[nodiscard]] static constexpr std::size_t size() noexcept { return 1; }
  static void sum(std::span<double>) noexcept {}
  static void max(std::span<double>) noexcept {}
  static void broadcast(std::string&, std::size_t) noexcept {}
};
static_assert(Communicator<single_process>);

/// Rows [first, first + count) of a batch of `rows`, for process `rank` of `size`: contiguous blocks,
/// the first `rows % size` processes one row more. A process may get no row (a small last batch).
struct row_block {
  std::size_t first = 0, count = 0;
};
inline row_block rows_of(std::size_t rows, std::size_t rank, std::size_t size) noexcept {
  const std::size_t base = rows / size, extra = rows % size;
  return {rank * base + (rank < extra ? rank : extra), base + (rank < extra ? 1 : 0)};
}

}  // namespace peft::train
