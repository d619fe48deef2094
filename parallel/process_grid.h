// ProcessGrid: the world's ranks arranged as tp x dp x pp, and a communicator for each axis.
//
// TP varies fastest, then DP, then PP (Megatron's order), so the ranks of a TP group are
// neighbours (one node, the fastest links) and a pipeline stage is a contiguous block:
//   world_rank = tp_rank + tp * (dp_rank + dp * pp_rank)
// Groups are built once (collectively) and the grid is passed by reference; there is no global
// parallel state.
#pragma once

#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace loom::parallel {

struct GridShape {
  int tp = 1;
  int pp = 1;
  int dp = 1;
  int world() const { return tp * pp * dp; }
  std::string str() const;  // "tp=2 x pp=2 x dp=1"
};

struct GridCoord {
  int tp = 0;
  int dp = 0;
  int pp = 0;
  bool operator==(const GridCoord&) const = default;
};

// UserError unless every axis is positive.
void validate_grid_shape(const GridShape& shape);
GridCoord grid_coord_of(const GridShape& shape, int world_rank);
int grid_rank_of(const GridShape& shape, const GridCoord& coord);

class ProcessGrid {
 public:
  // Collective over `world`. UserError (the same on every rank) if the world size is not
  // tp * pp * dp.
  ProcessGrid(Communicator& world, const GridShape& shape);

  const GridShape& shape() const { return shape_; }
  const GridCoord& coord() const { return coord_; }
  Communicator& world() const { return world_; }
  Communicator& tp() const { return *tp_; }  // same dp and pp coordinates
  Communicator& dp() const { return *dp_; }  // same tp and pp coordinates
  Communicator& pp() const { return *pp_; }  // same tp and dp coordinates
  // The first and last stage of this rank's pipeline (same tp and dp coordinates), which hold the
  // two copies of the tied token embedding; a one-rank group on the stages in between (and the
  // whole pipeline's single rank when pp = 1).
  Communicator& embedding() const { return *embedding_; }
  bool first_stage() const { return coord_.pp == 0; }
  bool last_stage() const { return coord_.pp == shape_.pp - 1; }

 private:
  Communicator& world_;
  GridShape shape_;
  GridCoord coord_;
  std::unique_ptr<Communicator> tp_, dp_, pp_, embedding_;
};

}  // namespace loom::parallel
