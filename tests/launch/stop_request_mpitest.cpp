// Every rank gets the same stop decision, naming the strongest reason and the lowest rank that
// has it, whatever each rank passed.
#include <gtest/gtest.h>

#include "launch/stop_request.h"
#include "mpi_test_util.h"

namespace loom {
namespace {

TEST(StopAgreementMpiTest, AllRanksAgree) {
  parallel::Communicator& world = testing::mpi_world();
  const int n = world.size();
  EXPECT_FALSE(agree_on_stop(world, StopReason::kNone).stop());
  // Only the last rank was signalled.
  StopDecision d = agree_on_stop(world, world.rank() == n - 1 ? StopReason::kUser1 : StopReason::kNone);
  EXPECT_EQ(d.reason, StopReason::kUser1);
  EXPECT_EQ(d.rank, n - 1);
  // Rank 0's time budget ran out while the odd ranks got SIGTERM: SIGTERM, lowest odd rank.
  const StopReason mine = world.rank() == 0 ? StopReason::kTimeBudget
                          : world.rank() % 2 == 1 ? StopReason::kTerminate : StopReason::kNone;
  d = agree_on_stop(world, mine);
  EXPECT_EQ(d.reason, n > 1 ? StopReason::kTerminate : StopReason::kTimeBudget);
  EXPECT_EQ(d.rank, n > 1 ? 1 : 0);
}

}  // namespace
}  // namespace loom
