// The data-parallel checks of data_parallel_checks.hpp on the CUDA backend, over NCCL.
#include "mpi/data_parallel_checks.hpp"
#include "mpi/nccl_checks.hpp"
#include "peft/cuda/backend.cuh"
#include "peft/cuda/nccl_communicator.cuh"

namespace peft::test::nccl_checks {
int gpus(std::string& why) { return peft::cuda::device_count(&why); }
std::string unique_id() { return peft::cuda::nccl_communicator::unique_id(); }
int run(const std::string& id, std::size_t rank, std::size_t size) {
  peft::cuda::nccl_communicator world(id, rank, size, peft::cuda::local_device(rank));
  return data_parallel::run_checks<backend::cuda<double>>(world);
}
}  // namespace peft::test::nccl_checks
