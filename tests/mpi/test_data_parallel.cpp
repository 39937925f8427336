// Data-parallel training over MPI, run as `mpiexec -np 2 peft_mpi_tests`: the checks of
// data_parallel_checks.hpp on the eigen backend in double, with the MPI communicator as it is (the
// trainer sums its gradients through one host buffer) and wrapped as a `TensorSumCommunicator` (the
// trainer hands it the gradient tensors, as it does NCCL's on GPUs).
#include <cstdio>
#include <span>
#include <vector>

#include "mpi/data_parallel_checks.hpp"
#include "peft/backend/eigen.hpp"
#include "peft/train/mpi_communicator.hpp"

namespace {
using B = peft::backend::eigen<double>;

/// `mpi_communicator` plus `sum_tensors`: the tensors' values packed into one buffer, summed, and
/// unpacked.
struct mpi_tensor_communicator : peft::train::mpi_communicator {
  static inline std::size_t tensor_sums = 0;  // calls (over every copy), to show the trainer took this path
  void sum_tensors(B::context&, std::span<B::tensor* const> tensors) {
    std::vector<double> all;
    for (const B::tensor* t : tensors) all.insert(all.end(), t->data(), t->data() + t->size());
    sum(all);
    std::size_t at = 0;
    for (B::tensor* t : tensors) {
      std::copy_n(all.begin() + std::ptrdiff_t(at), t->size(), t->data());
      at += t->size();
    }
    ++tensor_sums;
  }
};
static_assert(peft::train::TensorSumCommunicator<mpi_tensor_communicator, B>);
static_assert(!peft::train::TensorSumCommunicator<peft::train::mpi_communicator, B>);
}  // namespace

int main(int argc, char** argv) {
  peft::train::mpi_session session(argc, argv);
  peft::train::mpi_communicator world;
  if (world.size() < 2) {
    std::printf("run with mpiexec -np 2 or more\n");
    return 1;
  }
  namespace dp = peft::test::data_parallel;
  if (world.rank() == 0) std::printf("-- the trainer's host gather (mpi_communicator)\n");
  int failed = dp::run_checks<B>(world);
  if (world.rank() == 0) std::printf("-- the trainer's tensor sums (as NCCL's), over MPI\n");
  mpi_tensor_communicator tensors;
  failed += dp::run_checks<B>(tensors);
  // The checks call sum_tensors once themselves; the trainer once per optimizer step of its runs.
  if (mpi_tensor_communicator::tensor_sums < 10) {
    std::printf("FAIL (process %zu): the trainer did not sum through sum_tensors (%zu calls)\n", world.rank(),
                mpi_tensor_communicator::tensor_sums);
    ++failed;
  }
  return failed == 0 ? 0 : 1;
}
