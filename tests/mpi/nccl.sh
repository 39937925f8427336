#!/usr/bin/env bash
# ctest mpi.nccl: data-parallel training over NCCL with one process per GPU (up to 8), or skipped
# (exit 77) when this machine has no GPU. Usage: nccl.sh <peft_nccl_tests> <mpiexec> [mpiexec flags...]
set -euo pipefail
bin=$1 mpiexec=$2
shift 2
read -r gpus why < <("$bin" --gpus)
if [ "$gpus" -eq 0 ]; then
  echo "SKIPPED: the NCCL test needs a GPU (${why:-none found})"
  exit 77
fi
ranks=$((gpus < 8 ? gpus : 8))
echo "running $ranks process(es), one per GPU"
exec "$mpiexec" -np "$ranks" --oversubscribe "$@" "$bin"
