// Data-parallel training over MPI, run as `mpiexec -np 2 peft_mpi_tests`: the checks of
// data_parallel_checks.hpp on the eigen backend in double.
#include <cstdio>

#include "mpi/data_parallel_checks.hpp"
#include "peft/backend/eigen.hpp"
#include "peft/train/mpi_communicator.hpp"

int main(int argc, char** argv) {
  peft::train::mpi_session session(argc, argv);
  peft::train::mpi_communicator world;
  if (world.size() < 2) {
    std::printf("run with mpiexec -np 2 or more\n");
    return 1;
  }
  return peft::test::data_parallel::run_checks<peft::backend::eigen<double>>(world) == 0 ? 0 : 1;
}
