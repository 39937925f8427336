#pragma once
/// \file `peft::cuda::nccl_communicator`: the trainer's communicator between GPUs, over NCCL, for
/// data-parallel training with the CUDA backend (one process per GPU, on one machine or many).
/// Including this header needs `<nccl.h>`; the program links NCCL (CMake: `peft::nccl`, defined when
/// NCCL is found).
///
/// The trainable gradients are summed where they live (`sum_tensors`: no copy to the host), all of a
/// step's tensors in one NCCL group; the few numbers the trainer agrees on each step go through a
/// small device buffer. Sums are a reduction to process 0 followed by a broadcast, as with MPI, so
/// that every process gets the same bits by construction: the trainer keeps the replicas identical
/// and checks that they are.
///
/// NCCL needs one GPU per process: two processes of one group on the same GPU are refused by NCCL.
/// A process that dies inside a collective leaves the others waiting in NCCL; the launcher (`mpirun`)
/// ends them, as it does for MPI.

#include <nccl.h>

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/cuda/backend.cuh"
#include "peft/train/communicator.hpp"

namespace peft::cuda {

inline void check(ncclResult_t status, const char* what) {
  if (status != ncclSuccess)
    throw error(peft::detail::concat("NCCL: ", what, " failed: ", ncclGetErrorString(status)));
}

/// The NCCL type of T.
template <class T>
constexpr ncclDataType_t nccl_type() {
  if constexpr (std::is_same_v<T, double>) return ncclFloat64;
  else if constexpr (std::is_same_v<T, float>) return ncclFloat32;
  else if constexpr (std::is_same_v<T, std::uint64_t>) return ncclUint64;
  else {
    static_assert(std::is_same_v<T, std::uint8_t>, "NCCL types used here: double, float, uint64, uint8");
    return ncclUint8;
  }
}

/// The GPU of this process among the machine's: the launcher's local rank (Open MPI's
/// OMPI_COMM_WORLD_LOCAL_RANK, MPICH's MPI_LOCALRANKID, Slurm's SLURM_LOCALID), else `rank`, modulo
/// the number of GPUs. Throws when there is no GPU.
inline int local_device(std::size_t rank) {
  std::string why;
  const int devices = device_count(&why);
  if (devices == 0) throw error("NCCL needs a GPU and there is none (" + why + ")");
  std::size_t local = rank;
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"})
    if (const char* v = std::getenv(name); v && *v) {
      local = std::size_t(std::strtoull(v, nullptr, 10));
      break;
    }
  return int(local % std::size_t(devices));
}

/// A group of processes, one GPU each, that sum over NCCL. Satisfies `train::Communicator` and
/// `train::TensorSumCommunicator<backend::cuda<T>>`. A handle: copies share one NCCL communicator,
/// destroyed with the last copy. Every process of the group must make the same calls in the same
/// order. Construct it before the CUDA context: it makes its GPU the current one.
class nccl_communicator {
 public:
  /// Joins group `id` (from `unique_id()` on one process, carried to the others by any means) as
  /// process `rank` of `size`, on GPU `device`. Collective over the group.
  nccl_communicator(const std::string& id, std::size_t rank, std::size_t size, int device) {
    if (id.size() != sizeof(ncclUniqueId))
      throw error(peft::detail::concat("NCCL: a group id has ", sizeof(ncclUniqueId), " bytes, not ", id.size()));
    if (size == 0 || rank >= size) throw error(peft::detail::concat("NCCL: process ", rank, " of a group of ", size));
    check(cudaSetDevice(device), "cudaSetDevice");
    ncclUniqueId uid;
    std::memcpy(&uid, id.data(), sizeof uid);
    auto s = std::make_shared<state>();
    s->rank = rank, s->size = size, s->device = device;
    check(ncclCommInitRank(&s->comm, int(size), uid, int(rank)), "ncclCommInitRank");
    state_ = std::move(s);
  }

  /// Joins the group of the processes of `bootstrap` (an MPI communicator, say), with the same
  /// ranks, on this process's `local_device`: process 0 draws the group's id and `bootstrap`
  /// carries it to the others. Collective over `bootstrap`.
  template <train::Communicator Bootstrap>
    requires(!std::same_as<Bootstrap, nccl_communicator>)  // a copy shares the group instead
  explicit nccl_communicator(Bootstrap& bootstrap)
      : nccl_communicator(bootstrap, local_device(bootstrap.rank())) {}
  template <train::Communicator Bootstrap>
    requires(!std::same_as<Bootstrap, nccl_communicator>)
  nccl_communicator(Bootstrap& bootstrap, int device)
      : nccl_communicator(shared_id(bootstrap), bootstrap.rank(), bootstrap.size(), device) {}

  /// A new group id (on one process only).
  static std::string unique_id() {
    ncclUniqueId uid;
    check(ncclGetUniqueId(&uid), "ncclGetUniqueId");
    return std::string(reinterpret_cast<const char*>(&uid), sizeof uid);
  }

  [[nodiscard]] std::size_t rank() const noexcept { return state_->rank; }
  [[nodiscard]] std::size_t size() const noexcept { return state_->size; }
  [[nodiscard]] int device() const noexcept { return state_->device; }

  /// Host values, through the device: every process gets their sum (or maximum).
  void sum(std::span<double> values) { host_reduce(values, ncclSum); }
  void max(std::span<double> values) { host_reduce(values, ncclMax); }

  /// Every process gets `root`'s text.
  void broadcast(std::string& text, std::size_t root) {
    std::uint64_t n = text.size();
    auto* length = staging<std::uint64_t>(1);
    check(cudaMemcpy(length, &n, sizeof n, cudaMemcpyHostToDevice), "cudaMemcpy (to the device)");
    check(ncclBroadcast(length, length, 1, nccl_type<std::uint64_t>(), int(root), state_->comm, nullptr), "ncclBroadcast");
    check(cudaMemcpy(&n, length, sizeof n, cudaMemcpyDeviceToHost), "cudaMemcpy (to the host)");
    text.resize(std::size_t(n));
    if (n == 0) return;
    auto* bytes = staging<std::uint8_t>(text.size());
    check(cudaMemcpy(bytes, text.data(), text.size(), cudaMemcpyHostToDevice), "cudaMemcpy (to the device)");
    check(ncclBroadcast(bytes, bytes, text.size(), nccl_type<std::uint8_t>(), int(root), state_->comm, nullptr),
          "ncclBroadcast");
    check(cudaMemcpy(text.data(), bytes, text.size(), cudaMemcpyDeviceToHost), "cudaMemcpy (to the host)");
  }

  /// Device tensors summed in place on `ctx`'s stream: one group of reductions to process 0, then one
  /// group of broadcasts from it.
  template <class T>
  void sum_tensors(context& ctx, std::span<device_tensor<T>* const> tensors) {
    check(ncclGroupStart(), "ncclGroupStart");
    for (device_tensor<T>* t : tensors)
      if (!t->empty())
        check(ncclReduce(t->data(), t->data(), t->size(), nccl_type<T>(), ncclSum, 0, state_->comm, ctx.stream), "ncclReduce");
    check(ncclGroupEnd(), "ncclGroupEnd");
    check(ncclGroupStart(), "ncclGroupStart");
    for (device_tensor<T>* t : tensors)
      if (!t->empty())
        check(ncclBroadcast(t->data(), t->data(), t->size(), nccl_type<T>(), 0, state_->comm, ctx.stream), "ncclBroadcast");
    check(ncclGroupEnd(), "ncclGroupEnd");
  }

 private:
  struct state {
    ncclComm_t comm = nullptr;
    std::size_t rank = 0, size = 1;
    int device = 0;
    void* buffer = nullptr;  // device staging for host values
    std::size_t capacity = 0;
    state() = default;
    state(const state&) = delete;
    state& operator=(const state&) = delete;
    ~state() {
      if (buffer) cudaFree(buffer);
      if (comm) ncclCommDestroy(comm);
    }
  };

  template <class Bootstrap>
  static std::string shared_id(Bootstrap& bootstrap) {
    std::string id = bootstrap.rank() == 0 ? unique_id() : std::string();
    bootstrap.broadcast(id, 0);
    return id;
  }

  template <class T>
  T* staging(std::size_t n) {
    const std::size_t bytes = std::max<std::size_t>(n, 1) * sizeof(T);
    if (bytes > state_->capacity) {
      if (state_->buffer) check(cudaFree(state_->buffer), "cudaFree");
      state_->buffer = nullptr, state_->capacity = 0;
      check(cudaMalloc(&state_->buffer, bytes), "cudaMalloc");
      state_->capacity = bytes;
    }
    return static_cast<T*>(state_->buffer);
  }

  void host_reduce(std::span<double> values, ncclRedOp_t op) {
    if (values.empty()) return;
    double* d = staging<double>(values.size());
    check(cudaMemcpy(d, values.data(), values.size_bytes(), cudaMemcpyHostToDevice), "cudaMemcpy (to the device)");
    check(ncclReduce(d, d, values.size(), nccl_type<double>(), op, 0, state_->comm, nullptr), "ncclReduce");
    check(ncclBroadcast(d, d, values.size(), nccl_type<double>(), 0, state_->comm, nullptr), "ncclBroadcast");
    check(cudaMemcpy(values.data(), d, values.size_bytes(), cudaMemcpyDeviceToHost), "cudaMemcpy (to the host)");
  }

  std::shared_ptr<state> state_;
};
static_assert(train::Communicator<nccl_communicator>);
static_assert(train::TensorSumCommunicator<nccl_communicator, backend::cuda<double>>);
static_assert(train::TensorSumCommunicator<nccl_communicator, backend::cuda<float>>);

}  // namespace peft::cuda
