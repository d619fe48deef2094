// Pipeline schedules: every rank forwards and backwards every micro-batch of every chunk exactly
// once, forwards before backwards, with a bounded number in flight; run together (simulated,
// unit task times) they never deadlock and their bubble equals the textbook formula.
#include "parallel/pipeline_schedule.h"

#include <set>
#include <tuple>

#include "core/base/check.h"
#include "test_util.h"

namespace loom::parallel {
namespace {

using Kind = PipelineAction::Kind;

TEST(PipelineScheduleTest, OneFOneBHasWarmupSteadyStateAndCooldown) {
  // p = 4, m = 6, stage 1: two warm-up forwards, then F/B pairs, then the last two backwards.
  const std::vector<PipelineAction> s = schedule_1f1b(4, 1, 6);
  const std::vector<PipelineAction> expected = {
      {Kind::kForward, 0, 0}, {Kind::kForward, 1, 0},  {Kind::kForward, 2, 0},
      {Kind::kBackward, 0, 0}, {Kind::kForward, 3, 0}, {Kind::kBackward, 1, 0},
      {Kind::kForward, 4, 0}, {Kind::kBackward, 2, 0}, {Kind::kForward, 5, 0},
      {Kind::kBackward, 3, 0}, {Kind::kBackward, 4, 0}, {Kind::kBackward, 5, 0}};
  EXPECT_EQ(s, expected);
  // The last stage alternates from the start.
  EXPECT_EQ(schedule_1f1b(4, 3, 2), (std::vector<PipelineAction>{{Kind::kForward, 0, 0}, {Kind::kBackward, 0, 0},
                                                                 {Kind::kForward, 1, 0}, {Kind::kBackward, 1, 0}}));
}

TEST(PipelineScheduleTest, EveryShapeIsCompleteBoundedDeadlockFreeWithTheExpectedBubble) {
  for (int p : {1, 2, 3, 4}) {
    for (int v : {1, 2, 3}) {
      for (int m : {1, 2, 3, 4, 8, 12}) {
        if (v > 1 && m % p != 0) continue;
        SCOPED_TRACE(::testing::Message() << "p=" << p << " v=" << v << " m=" << m);
        const auto schedules = pipeline_schedules(p, v, m);
        for (int s = 0; s < p; ++s) {
          std::set<std::tuple<int, int, int>> seen;
          int in_flight = 0, peak = 0;
          for (const PipelineAction& a : schedules[static_cast<size_t>(s)]) {
            const bool forward = a.kind == Kind::kForward;
            ASSERT_TRUE(seen.insert({forward, a.micro_batch, a.chunk}).second) << "repeated action";
            if (!forward) {
              ASSERT_TRUE(seen.count({1, a.micro_batch, a.chunk})) << "backward before forward";
            }
            in_flight += forward ? 1 : -1;
            peak = std::max(peak, in_flight);
          }
          EXPECT_EQ(static_cast<int>(seen.size()), 2 * m * v);
          // 1F1B keeps at most p - s micro-batches' activations; interleaved a few groups more.
          const int bound = v == 1 ? p - s : (p - s - 1) * 2 + (v - 1) * p + 1;
          EXPECT_LE(peak, bound);
        }
        // Forward 1, backward 2 time units, as an F/B cost ratio of one to two.
        const PipelineSimulation sim = simulate_pipeline(schedules, v, 1.0, 2.0);
        ASSERT_FALSE(sim.deadlock);
        EXPECT_NEAR(sim.bubble, pipeline_bubble_fraction(p, v, m), 1e-9)
            << "makespan " << sim.makespan;
      }
    }
  }
}

TEST(PipelineScheduleTest, InterleavingShrinksTheBubble) {
  EXPECT_NEAR(pipeline_bubble_fraction(4, 1, 8), 3.0 / 11.0, 1e-12);
  EXPECT_NEAR(pipeline_bubble_fraction(4, 2, 8), 3.0 / 19.0, 1e-12);
  EXPECT_EQ(pipeline_bubble_fraction(1, 1, 8), 0.0);
}

TEST(PipelineScheduleTest, ShapesWithoutAScheduleAreUserErrors) {
  EXPECT_THROW(schedule_1f1b(0, 0, 4), UserError);
  EXPECT_THROW(schedule_1f1b(2, 0, 0), UserError);
  EXPECT_THROW(schedule_interleaved(4, 0, 2, 6), UserError);  // 6 micro-batches, groups of 4
  EXPECT_THROW(schedule_1f1b(2, 2, 4), Error);                // no stage 2 of 2
}

}  // namespace
}  // namespace loom::parallel
