// The grid's groups on real ranks: for every layout that factors the world size, each group has
// the right members in the right order and collectives inside it see only them.
#include "parallel/process_grid.h"

#include <vector>

#include "core/base/check.h"
#include "mpi_test_util.h"
#include "test_util.h"

namespace loom::parallel {
namespace {

TEST(ProcessGridMpiTest, GroupsHoldTheRanksThatShareTheOtherCoordinates) {
  Communicator& world = testing::mpi_world();
  const int n = world.size();
  for (int tp = 1; tp <= n; ++tp) {
    for (int pp = 1; pp <= n; ++pp) {
      if (n % (tp * pp) != 0) continue;
      const GridShape shape{tp, pp, n / (tp * pp)};
      ProcessGrid grid(world, shape);
      const GridCoord me = grid.coord();
      EXPECT_EQ(grid_rank_of(shape, me), world.rank());
      ASSERT_EQ(grid.tp().size(), shape.tp);
      ASSERT_EQ(grid.dp().size(), shape.dp);
      ASSERT_EQ(grid.pp().size(), shape.pp);
      EXPECT_EQ(grid.tp().rank(), me.tp);
      EXPECT_EQ(grid.dp().rank(), me.dp);
      EXPECT_EQ(grid.pp().rank(), me.pp);
      for (int i = 0; i < shape.tp; ++i) {
        EXPECT_EQ(grid.tp().world_rank_of(i), grid_rank_of(shape, {i, me.dp, me.pp})) << shape.str();
      }
      for (int i = 0; i < shape.dp; ++i) {
        EXPECT_EQ(grid.dp().world_rank_of(i), grid_rank_of(shape, {me.tp, i, me.pp})) << shape.str();
      }
      for (int i = 0; i < shape.pp; ++i) {
        EXPECT_EQ(grid.pp().world_rank_of(i), grid_rank_of(shape, {me.tp, me.dp, i})) << shape.str();
      }
      // The sum of world ranks over the tp group, computed locally and by the group.
      int32_t mine = world.rank(), sum = 0, expected = 0;
      grid.tp().all_reduce(&mine, &sum, 1, DType::kI32, ReduceOp::kSum);
      for (int i = 0; i < shape.tp; ++i) expected += grid_rank_of(shape, {i, me.dp, me.pp});
      EXPECT_EQ(sum, expected) << shape.str();
      EXPECT_EQ(grid.first_stage(), me.pp == 0);
      EXPECT_EQ(grid.last_stage(), me.pp == shape.pp - 1);
    }
  }
}

TEST(ProcessGridMpiTest, AWorldThatDoesNotFactorIsOneClearErrorOnEveryRank) {
  Communicator& world = testing::mpi_world();
  const GridShape shape{world.size() + 1, 1, 1};
  try {
    ProcessGrid grid(world, shape);
    FAIL() << "expected an error";
  } catch (const UserError& e) {
    const std::string message = e.what();
    const std::string started = std::to_string(world.size()) + (world.size() == 1 ? " was" : " were") + " started";
    EXPECT_NE(message.find("needs " + std::to_string(world.size() + 1) + " processes but " + started),
              std::string::npos)
        << message;
    EXPECT_NE(message.find("mpirun -np " + std::to_string(world.size() + 1)), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace loom::parallel
