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
  int rank = -1;
  if (initialized && !finalized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return str_cat("world rank", rank < 0 ? std::string("?") : std::to_string(rank), "on host", host_name());
}

}  // namespace loom
