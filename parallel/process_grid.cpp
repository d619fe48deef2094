#include "parallel/process_grid.h"

#include "core/base/check.h"

namespace loom::parallel {

std::string GridShape::str() const {
  return "tp=" + std::to_string(tp) + " x pp=" + std::to_string(pp) + " x dp=" + std::to_string(dp);
}

void validate_grid_shape(const GridShape& s) {
  if (s.tp <= 0 || s.pp <= 0 || s.dp <= 0) {
    fail_user("parallel layout", s.str(), "is invalid: every axis must be a positive integer");
  }
}

GridCoord grid_coord_of(const GridShape& s, int world_rank) {
  LOOM_CHECK(world_rank >= 0 && world_rank < s.world(), "rank", world_rank, "outside the grid", s.str());
  GridCoord c;
  c.tp = world_rank % s.tp;
  c.dp = (world_rank / s.tp) % s.dp;
  c.pp = world_rank / (s.tp * s.dp);
  return c;
}

int grid_rank_of(const GridShape& s, const GridCoord& c) {
  LOOM_CHECK(c.tp >= 0 && c.tp < s.tp && c.dp >= 0 && c.dp < s.dp && c.pp >= 0 && c.pp < s.pp,
             "coordinate (tp", c.tp, "dp", c.dp, "pp", c.pp, ") outside the grid", s.str());
  return c.tp + s.tp * (c.dp + s.dp * c.pp);
}

ProcessGrid::ProcessGrid(Communicator& world, const GridShape& shape) : world_(world), shape_(shape) {
  validate_grid_shape(shape);
  if (shape.world() != world.size()) {
    fail_user("parallel layout", shape.str(), "needs", shape.world(), "processes but", world.size(),
              world.size() == 1 ? "was" : "were", "started: start", shape.world(),
              "(mpirun -np " + std::to_string(shape.world()) + ", srun -n " + std::to_string(shape.world()) +
                  ") or set parallel.tp, parallel.pp and parallel.dp so that tp*pp*dp =",
              world.size());
  }
  coord_ = grid_coord_of(shape, world.rank());
  // A group is the set of ranks that agree on the other two coordinates; the key orders the
  // members by their own coordinate along the group's axis.
  tp_ = world.split(coord_.dp + shape.dp * coord_.pp, coord_.tp, "tp");
  dp_ = world.split(coord_.tp + shape.tp * coord_.pp, coord_.dp, "dp");
  pp_ = world.split(coord_.tp + shape.tp * coord_.dp, coord_.pp, "pp");
  const bool holds_embedding = first_stage() || last_stage();
  const int pipelines = shape.tp * shape.dp;
  embedding_ = world.split(holds_embedding ? coord_.tp + shape.tp * coord_.dp : pipelines + world.rank(),
                           coord_.pp, "embedding");
}

}  // namespace loom::parallel
