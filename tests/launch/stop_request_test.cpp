// Stopping early: durations, the time budget's estimate, the signal flag, the agreement on one
// process, and LOOM_FAULT's syntax (the multi-rank behaviour is tests/launch/faults_test.sh).
#include <gtest/gtest.h>

#include <csignal>

#include "core/base/check.h"
#include "launch/fault_injection.h"
#include "launch/stop_request.h"
#include "parallel/solo_communicator.h"

namespace loom {
namespace {

TEST(StopRequestTest, ParsesDurations) {
  EXPECT_EQ(parse_duration("90", "--time-budget"), 90);
  EXPECT_EQ(parse_duration("90s", "--time-budget"), 90);
  EXPECT_EQ(parse_duration("20m", "--time-budget"), 1200);
  EXPECT_EQ(parse_duration("3h50m", "--time-budget"), 3 * 3600 + 50 * 60);
  EXPECT_EQ(parse_duration("1h30m15s", "--time-budget"), 5415);
  EXPECT_EQ(parse_duration("2d", "--time-budget"), 172800);
  EXPECT_EQ(parse_duration("1.5h", "--time-budget"), 5400);
  for (const char* bad : {"", "h", "3h50", "10x", "-5m", "0", "0s", "m5"}) {
    try {
      parse_duration(bad, "--time-budget");
      ADD_FAILURE() << "'" << bad << "' was accepted";
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find("--time-budget is '" + std::string(bad) + "'"), std::string::npos) << e.what();
    }
  }
}

TEST(StopRequestTest, TimeBudgetKeepsRoomForAStepAndASave) {
  using Clock = TimeBudget::Clock;
  const Clock::time_point start = Clock::now();
  EXPECT_FALSE(TimeBudget().exhausted(start + std::chrono::hours(1000)));
  TimeBudget budget(100, start);
  budget.record_step(10);
  budget.record_step(5);  // the slowest step counts
  EXPECT_FALSE(budget.exhausted(start + std::chrono::seconds(79)));
  EXPECT_TRUE(budget.exhausted(start + std::chrono::seconds(81)));  // 19 s left < 2 x 10 s
  budget.record_save(15);
  EXPECT_TRUE(budget.exhausted(start + std::chrono::seconds(51)));  // 49 s left < 2 x (10 + 15) s
  EXPECT_FALSE(budget.exhausted(start + std::chrono::seconds(49)));
}

TEST(StopRequestTest, SignalsSetTheFlagAndTheStrongestWins) {
  parallel::SoloCommunicator world("world");
  SignalStop signals;
  EXPECT_EQ(signals.received(), StopReason::kNone);
  EXPECT_FALSE(agree_on_stop(world, signals.received()).stop());
  std::raise(SIGUSR1);
  EXPECT_EQ(signals.received(), StopReason::kUser1);
  std::raise(SIGUSR1);  // repeated: still just a request
  EXPECT_EQ(signals.received(), StopReason::kUser1);
  const StopDecision decision = agree_on_stop(world, signals.received());
  EXPECT_TRUE(decision.stop());
  EXPECT_EQ(decision.reason, StopReason::kUser1);
  EXPECT_EQ(decision.rank, 0);
  EXPECT_STREQ(stop_reason_name(decision.reason), "SIGUSR1");
  // SIGTERM is stronger; repeated (Slurm may deliver it twice), it still only asks.
  std::raise(SIGTERM);
  std::raise(SIGTERM);
  EXPECT_EQ(signals.received(), StopReason::kTerminate);
}

TEST(StopRequestTest, HandlersAreRestored) {
  struct sigaction before = {};
  sigaction(SIGTERM, nullptr, &before);
  {
    SignalStop signals;
    struct sigaction during = {};
    sigaction(SIGTERM, nullptr, &during);
    EXPECT_NE(during.sa_handler, before.sa_handler);
  }
  struct sigaction after = {};
  sigaction(SIGTERM, nullptr, &after);
  EXPECT_EQ(after.sa_handler, before.sa_handler);
}

TEST(FaultInjectionTest, ParsesEntriesForThisRankOnly) {
  FaultPlan plan("kill@12:1,nan@7,hang@5:3,kill-in-save@10:1,signal@8", 1);
  EXPECT_FALSE(plan.empty());
  EXPECT_FALSE(plan.due(FaultKind::kKill, 11));
  EXPECT_TRUE(plan.due(FaultKind::kKill, 12));
  EXPECT_FALSE(plan.due(FaultKind::kKill, 12)) << "an entry fires once";
  EXPECT_TRUE(plan.due(FaultKind::kNan, 7));
  EXPECT_FALSE(plan.due(FaultKind::kHang, 5)) << "rank 3's entry";
  EXPECT_TRUE(plan.due(FaultKind::kKillInSave, 10));
  EXPECT_TRUE(plan.due(FaultKind::kSignal, 8));
  EXPECT_TRUE(FaultPlan("", 0).empty());
  EXPECT_TRUE(FaultPlan("kill@3:2", 0).empty());
}

TEST(FaultInjectionTest, RejectsMalformedEntries) {
  for (const char* bad : {"kill", "explode@3", "kill@x", "kill@3:y", "nan@-1", "kill@3:"}) {
    try {
      FaultPlan plan(bad, 0);
      ADD_FAILURE() << "'" << bad << "' was accepted";
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find("LOOM_FAULT entry"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace loom
