#include "core/base/process.h"

#include <mpi.h>
#include <unistd.h>

#include "core/base/check.h"

namespace loom {

std::string host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "?";
  return name;
}

std::string this_process() {
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  int rank = -1, size = 1;
  if (initialized && !finalized) {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
  }
  // A process on its own has no rank worth naming.
  if (rank < 0 || size == 1) return str_cat("on host", host_name());
  return str_cat("world rank", rank, "on host", host_name());
}

}  // namespace loom
