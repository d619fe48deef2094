// For multi-rank tests (tests/**/*_mpitest.cpp), run under mpirun by ctest: the world
// communicator of this process, created once in tests/mpi_test_main.cpp.
#pragma once

#include "parallel/communicator.h"

namespace loom::testing {

parallel::Communicator& mpi_world();

}  // namespace loom::testing
