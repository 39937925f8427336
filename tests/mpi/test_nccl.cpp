// Data-parallel training over NCCL, one process per GPU, run by tests/mpi/nccl.sh as
// `mpiexec -np <GPUs> peft_nccl_tests`: MPI carries the NCCL group id from process 0 to the others,
// then the checks run on the CUDA backend. `peft_nccl_tests --gpus` prints the number of GPUs (the
// script skips the test when it is 0).
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "mpi/nccl_checks.hpp"
#include "peft/train/mpi_communicator.hpp"

int main(int argc, char** argv) {
  namespace nccl = peft::test::nccl_checks;
  if (argc > 1 && std::strcmp(argv[1], "--gpus") == 0) {
    std::string why;
    const int n = nccl::gpus(why);
    std::printf("%d%s%s\n", n, n ? "" : " ", why.c_str());
    return 0;
  }
  peft::train::mpi_session session(argc, argv);
  peft::train::mpi_communicator world;
  try {
    std::string id = world.rank() == 0 ? nccl::unique_id() : std::string();
    world.broadcast(id, 0);
    return nccl::run(id, world.rank(), world.size()) == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "process %zu: %s\n", world.rank(), e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  return 1;
}
