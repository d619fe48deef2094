#include "parallel/process_grid.h"

#include <set>

#include "core/base/check.h"
#include "test_util.h"

namespace loom::parallel {
namespace {

TEST(ProcessGridTest, TensorParallelVariesFastestThenDataThenPipeline) {
  const GridShape s{2, 2, 2};  // tp, pp, dp
  EXPECT_EQ(grid_coord_of(s, 0), (GridCoord{0, 0, 0}));
  EXPECT_EQ(grid_coord_of(s, 1), (GridCoord{1, 0, 0}));  // next tp rank
  EXPECT_EQ(grid_coord_of(s, 2), (GridCoord{0, 1, 0}));  // next dp rank
  EXPECT_EQ(grid_coord_of(s, 4), (GridCoord{0, 0, 1}));  // next stage
  EXPECT_EQ(grid_coord_of(s, 7), (GridCoord{1, 1, 1}));
  for (int tp : {1, 2, 4}) {
    for (int pp : {1, 2, 3}) {
      for (int dp : {1, 2}) {
        const GridShape g{tp, pp, dp};
        std::set<int> seen;
        for (int r = 0; r < g.world(); ++r) {
          EXPECT_EQ(grid_rank_of(g, grid_coord_of(g, r)), r) << g.str();
          seen.insert(r);
        }
        EXPECT_EQ(static_cast<int>(seen.size()), tp * pp * dp);
      }
    }
  }
}

TEST(ProcessGridTest, InvalidShapesAreUserErrors) {
  EXPECT_THROW(validate_grid_shape(GridShape{0, 1, 1}), UserError);
  EXPECT_THROW(validate_grid_shape(GridShape{1, -2, 1}), UserError);
  EXPECT_THROW(grid_coord_of(GridShape{2, 1, 1}, 2), Error);
}

}  // namespace
}  // namespace loom::parallel
