// For multi-rank tests (tests/**/*_mpitest.cpp), run under mpirun by ctest: the world
// communicator of this process, created once in tests/mpi_test_main.cpp, and the model layouts
// the evaluation tests run through.
#pragma once

#include <functional>
#include <vector>

#include <gtest/gtest.h>

#include "core/gpt.h"
#include "parallel/communicator.h"
#include "parallel/process_grid.h"

namespace loom::testing {

parallel::Communicator& mpi_world();

// A layout of the world: tp x pp ranks per replica, `chunks` model chunks per pipeline rank
// (interleaved when > 1), dp replicas filling the world.
struct WorldLayout {
  int tp = 1, pp = 1, chunks = 1, dp = 1;
  bool sequence_parallel = false;
};

// Calls body(layout, grid, split) for tp x pp = 1x1, 2x1, 1x2, 2x2 and 1x2 interleaved (2 chunks),
// those the world's size allows, with and without sequence parallelism where tp > 1; split holds
// n_layer blocks spread evenly over the virtual stages. Each call runs under a SCOPED_TRACE
// naming its layout. Collective over the world.
inline void for_each_world_layout(
    int n_layer, const std::function<void(const WorldLayout&, parallel::ProcessGrid&, const std::vector<int>&)>& body) {
  parallel::Communicator& world = mpi_world();
  for (const WorldLayout& base : {WorldLayout{1, 1, 1}, WorldLayout{2, 1, 1}, WorldLayout{1, 2, 1},
                                  WorldLayout{2, 2, 1}, WorldLayout{1, 2, 2}}) {
    if (world.size() % (base.tp * base.pp) != 0) continue;
    WorldLayout layout = base;
    layout.dp = world.size() / (base.tp * base.pp);
    parallel::ProcessGrid grid(world, parallel::GridShape{layout.tp, layout.pp, layout.dp});
    const std::vector<int> split = even_block_split(n_layer, layout.pp * layout.chunks);
    for (bool sp : {false, true}) {
      if (sp && layout.tp == 1) continue;
      layout.sequence_parallel = sp;
      SCOPED_TRACE(::testing::Message() << "tp=" << layout.tp << " pp=" << layout.pp << " chunks=" << layout.chunks
                                        << " dp=" << layout.dp << " sequence_parallel=" << sp);
      body(layout, grid, split);
    }
  }
}

}  // namespace loom::testing
