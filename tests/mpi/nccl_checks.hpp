#pragma once
// The NCCL checks (nccl_checks.cu, compiled by nvcc) as plain functions, for the MPI-launched
// program test_nccl.cpp (compiled by the host compiler, which bootstraps the group over MPI).
#include <cstddef>
#include <string>

namespace peft::test::nccl_checks {
/// Usable GPUs; 0 with the reason in `why` when there is none.
int gpus(std::string& why);
/// A new NCCL group id (on process 0 only).
std::string unique_id();
/// The data-parallel checks on `backend::cuda<double>` over an `nccl_communicator` joining group
/// `id` as process `rank` of `size`; returns the failed checks over all processes.
int run(const std::string& id, std::size_t rank, std::size_t size);
}  // namespace peft::test::nccl_checks
