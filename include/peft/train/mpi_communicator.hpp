#pragma once
/// \file `peft::train::mpi_communicator`: the trainer's communicator over MPI (Open MPI, MPICH), for
/// data-parallel training across processes on one machine or many (`mpirun -np N ...`). Including
/// this header needs `<mpi.h>`; the program links MPI (CMake: `MPI::MPI_CXX`).
///
/// Sums are a reduction to rank 0 followed by a broadcast, so every process gets the same bits
/// (MPI_Allreduce promises the same value, not the same rounding). A process that dies makes
/// `mpirun` stop the others; a program whose process fails outside the trainer's collectives should
/// end them all with `MPI_Abort` (as `peft-train` does) rather than leave them waiting in one.

#include <mpi.h>

#include <algorithm>
#include <cstddef>
#include <limits>
#include <span>
#include <string>

#include "peft/core/error.hpp"
#include "peft/train/communicator.hpp"

namespace peft::train {

/// MPI's lifetime in a program: `MPI_Init_thread` (threads used by the calling thread only: OpenMP
/// regions make no MPI calls) and `MPI_Finalize`. Create one in `main` before any communicator.
class mpi_session {
 public:
  mpi_session(int& argc, char**& argv) {
    int provided = 0;
    check(MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  }
  mpi_session(const mpi_session&) = delete;
  mpi_session& operator=(const mpi_session&) = delete;
  ~mpi_session() { MPI_Finalize(); }

  static void check(int status, const char* what) {
    if (status == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(status, text, &length);
    throw error(std::string(what) + " failed: " + std::string(text, std::size_t(length)));
  }
};

/// The processes of an MPI communicator (MPI_COMM_WORLD by default). Satisfies `Communicator`.
class mpi_communicator {
 public:
  explicit mpi_communicator(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
    int r = 0, s = 0;
    mpi_session::check(MPI_Comm_rank(comm_, &r), "MPI_Comm_rank");
    mpi_session::check(MPI_Comm_size(comm_, &s), "MPI_Comm_size");
    rank_ = std::size_t(r), size_ = std::size_t(s);
  }

  [[nodiscard]] std::size_t rank() const noexcept { return rank_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

  void sum(std::span<double> values) { reduce(values, MPI_SUM); }
  void max(std::span<double> values) { reduce(values, MPI_MAX); }

  /// Every process gets `root`'s text.
  void broadcast(std::string& text, std::size_t root) {
    unsigned long long n = text.size();
    mpi_session::check(MPI_Bcast(&n, 1, MPI_UNSIGNED_LONG_LONG, int(root), comm_), "MPI_Bcast");
    text.resize(std::size_t(n));
    for (std::size_t done = 0; done < text.size();) {
      const std::size_t part = std::min<std::size_t>(text.size() - done, chunk);
      mpi_session::check(MPI_Bcast(text.data() + done, int(part), MPI_CHAR, int(root), comm_), "MPI_Bcast");
      done += part;
    }
  }

 private:
  static constexpr std::size_t chunk = std::size_t(std::numeric_limits<int>::max() / 2);

  void reduce(std::span<double> values, MPI_Op op) {
    for (std::size_t done = 0; done < values.size();) {
      const std::size_t part = std::min<std::size_t>(values.size() - done, chunk);
      double* p = values.data() + done;
      if (rank_ == 0)
        mpi_session::check(MPI_Reduce(MPI_IN_PLACE, p, int(part), MPI_DOUBLE, op, 0, comm_), "MPI_Reduce");
      else
        mpi_session::check(MPI_Reduce(p, nullptr, int(part), MPI_DOUBLE, op, 0, comm_), "MPI_Reduce");
      mpi_session::check(MPI_Bcast(p, int(part), MPI_DOUBLE, 0, comm_), "MPI_Bcast");
      done += part;
    }
  }

  MPI_Comm comm_;
  std::size_t rank_ = 0, size_ = 1;
};
static_assert(Communicator<mpi_communicator>);

}  // namespace peft::train
