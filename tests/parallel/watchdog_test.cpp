// Watchdog on the CPU, with fake operations and a fake group: a passed deadline is a CommTimeout
// naming the operation, its sequence number, the group, this rank, its host and the peer that did
// not arrive; completed operations never time out; the first failure aborts the group once and
// wins over later ones; operations after it fail at once; the destructor returns promptly with
// operations pending; and the thread sleeps between polls instead of spinning.
#include "parallel/watchdog.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "core/base/check.h"
#include "parallel/communicator.h"

namespace loom::parallel {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;
using State = Completion::State;

// One operation the test completes or fails by hand.
struct FakeOperation {
  std::atomic<State> state{State::kPending};
  std::atomic<int> polls{0};
};

class FakeCompletion final : public Completion {
 public:
  explicit FakeCompletion(std::shared_ptr<FakeOperation> operation)
      : operation_(std::move(operation)) {}
  Status poll() override {
    ++operation_->polls;
    const State state = operation_->state.load();
    return {state,
            state == State::kFailed ? "cudaErrorLaunchFailure: unspecified launch failure" : ""};
  }

 private:
  std::shared_ptr<FakeOperation> operation_;
};

class FakeGroup final : public WatchdogTarget {
 public:
  void enter_thread() override { entered = true; }
  std::string async_error() override {
    ++async_polls;
    std::lock_guard<std::mutex> lock(mutex_);
    return error_;
  }
  void abort() override { ++aborts; }
  void set_error(const std::string& error) {
    std::lock_guard<std::mutex> lock(mutex_);
    error_ = error;
  }

  std::atomic<bool> entered{false};
  std::atomic<int> async_polls{0};
  std::atomic<int> aborts{0};

 private:
  std::mutex mutex_;
  std::string error_;
};

WatchedGroup pipeline_group() { return WatchedGroup{"NCCL", "pp", 1, 4, 5, "node07", "device 1"}; }

Watchdog::Options every(std::chrono::microseconds interval) { return Watchdog::Options{interval}; }

// Watches a new pending fake operation and returns it.
std::shared_ptr<FakeOperation> watch(Watchdog& watchdog, const std::string& what, uint64_t sequence,
                                     milliseconds timeout,
                                     const std::string& suspects = "peer(s) did not arrive") {
  auto operation = std::make_shared<FakeOperation>();
  watchdog.watch(WatchedOperation{what, sequence, suspects, timeout},
                 std::make_unique<FakeCompletion>(operation));
  return operation;
}

// The message of the loom::Error `call` throws (and whether it was a CommTimeout), or "(none)".
struct Thrown {
  std::string message = "(none)";
  bool timeout = false;
};
template <typename Call>
Thrown thrown_by(Call&& call) {
  Thrown thrown;
  try {
    call();
  } catch (const CommTimeout& e) {
    thrown = {e.what(), true};
  } catch (const Error& e) {
    thrown = {e.what(), false};
  }
  return thrown;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Polls `condition` for up to a second.
template <typename Condition>
bool eventually(Condition&& condition) {
  const Clock::time_point give_up = Clock::now() + std::chrono::seconds(1);
  while (!condition()) {
    if (Clock::now() > give_up) return false;
    std::this_thread::sleep_for(milliseconds(1));
  }
  return true;
}

TEST(WatchdogTest, DescribesTheGroupByNameRankWorldRankHostAndPlace) {
  EXPECT_EQ(pipeline_group().describe(),
            "NCCL group 'pp' (rank 1 of 4, world rank 5 on host node07, device 1)");
  EXPECT_EQ((WatchedGroup{"", "dp", 0, 2, 3, "h", ""}).describe(),
            "group 'dp' (rank 0 of 2, world rank 3 on host h)");
}

TEST(WatchdogTest, APassedDeadlineIsACommTimeoutNamingOperationGroupRankPeerAndSequence) {
  FakeGroup group;
  Watchdog watchdog(pipeline_group(), group, every(std::chrono::milliseconds(1)));
  const Clock::time_point start = Clock::now();
  watch(watchdog, "send of 64 f32 elements to rank 2 (tag 0)", 17, milliseconds(30),
        "world rank 6 did not post the matching operation");

  const Thrown thrown = thrown_by([&] { watchdog.wait_all(); });
  const auto waited = Clock::now() - start;
  EXPECT_TRUE(thrown.timeout) << thrown.message;
  for (const char* part :
       {"send of 64 f32 elements to rank 2 (tag 0) (operation #17)", "NCCL group 'pp'",
        "rank 1 of 4", "world rank 5 on host node07", "device 1", "did not complete within 30 ms",
        "world rank 6 did not post the matching operation", "the communicator was aborted"}) {
    EXPECT_TRUE(contains(thrown.message, part))
        << "missing '" << part << "' in: " << thrown.message;
  }
  EXPECT_GE(waited, milliseconds(30));
  EXPECT_LT(waited, milliseconds(500));
  // Waiters learn of the failure first; the abort follows.
  EXPECT_TRUE(eventually([&] { return group.aborts.load() == 1; })) << "never aborted";
  EXPECT_TRUE(group.entered.load());
  EXPECT_TRUE(watchdog.failed());
}

TEST(WatchdogTest, ADeadlinePassedWithNobodyWaitingAbortsOnItsOwn) {
  FakeGroup group;
  Watchdog watchdog(pipeline_group(), group, every(std::chrono::milliseconds(1)));
  watch(watchdog, "all_reduce of 10 f32 elements", 3, milliseconds(20));
  EXPECT_TRUE(eventually([&] { return group.aborts.load() == 1; })) << "never aborted";
  const Thrown refused = thrown_by([&] { watchdog.check("broadcast"); });
  EXPECT_TRUE(refused.timeout) << refused.message;
  EXPECT_TRUE(contains(refused.message, "broadcast on NCCL group 'pp'")) << refused.message;
  EXPECT_TRUE(
      contains(refused.message, "refused: the communicator was aborted by an earlier error"))
      << refused.message;
  EXPECT_TRUE(contains(refused.message, "all_reduce of 10 f32 elements (operation #3)"))
      << refused.message;
}

TEST(WatchdogTest, CompletedOperationsNeverTimeOut) {
  FakeGroup group;
  Watchdog watchdog(pipeline_group(), group, every(std::chrono::milliseconds(1)));
  auto early = watch(watchdog, "all_gather of 8 bf16 elements per rank", 1, milliseconds(20));
  auto late = watch(watchdog, "reduce_scatter of 8 f32 elements per rank", 2, milliseconds(40));
  early->state = State::kDone;
  std::this_thread::sleep_for(milliseconds(10));
  late->state = State::kDone;
  std::this_thread::sleep_for(milliseconds(60));  // past both deadlines
  EXPECT_NO_THROW(watchdog.wait_all());
  EXPECT_NO_THROW(watchdog.check("all_reduce"));
  EXPECT_EQ(group.aborts.load(), 0);
  EXPECT_FALSE(watchdog.failed());
  EXPECT_EQ(watchdog.pending(), 0u);
  // Polled no more once done.
  const int polls = early->polls.load();
  std::this_thread::sleep_for(milliseconds(10));
  EXPECT_EQ(early->polls.load(), polls);
}

TEST(WatchdogTest, WaitAllReturnsOnceEveryEarlierOperationCompletedInAnyOrder) {
  FakeGroup group;
  Watchdog watchdog(pipeline_group(), group, every(std::chrono::milliseconds(1)));
  auto first = watch(watchdog, "all_reduce of 4 f32 elements", 1, milliseconds(10'000));
  auto second = watch(watchdog, "all_reduce of 4 f32 elements", 2, milliseconds(10'000));
  std::thread completer([&] {
    std::this_thread::sleep_for(milliseconds(20));
    second->state = State::kDone;
    std::this_thread::sleep_for(milliseconds(20));
    first->state = State::kDone;
  });
  const Clock::time_point start = Clock::now();
  watchdog.wait_all();
  const auto waited = Clock::now() - start;
  completer.join();
  EXPECT_GE(waited, milliseconds(35));
  EXPECT_LT(waited, milliseconds(500));
  EXPECT_EQ(watchdog.pending(), 0u);
  EXPECT_EQ(group.aborts.load(), 0);
}

TEST(WatchdogTest, WaitAllDoesNotWaitForOperationsWatchedAfterIt) {
  FakeGroup group;
  Watchdog watchdog(pipeline_group(), group, every(std::chrono::milliseconds(1)));
  auto earlier =
      watch(watchdog, "broadcast of 7 f32 elements from rank 0", 1, milliseconds(10'000));
  std::thread poster([&] {
    std::this_thread::sleep_for(milliseconds(5));
    watch(watchdog, "broadcast of 7 f32 elements from rank 0", 2, milliseconds(10'000));
    std::this_thread::sleep_for(milliseconds(5));
    earlier->state = State::kDone;
  });
  const Clock::time_point start = Clock::now();
  watchdog.wait_all();
  poster.join();
  EXPECT_LT(Clock::now() - start, milliseconds(500));
  EXPECT_EQ(watchdog.pending(), 1u);
}

TEST(WatchdogTest, AFailedOperationAbortsOnceAndTheFirstFailureWins) {
  FakeGroup group;
  Watchdog watchdog(pipeline_group(), group, every(std::chrono::milliseconds(1)));
  watch(watchdog, "all_reduce of 10 f32 elements", 1, milliseconds(10'000));
  auto broken = watch(watchdog, "all_gather of 3 bf16 elements per rank", 2, milliseconds(10'000));
  watch(watchdog, "reduce_scatter of 5 i32 elements per rank", 3, milliseconds(15));
  broken->state = State::kFailed;

  const Thrown thrown = thrown_by([&] { watchdog.wait_all(); });
  EXPECT_FALSE(thrown.timeout) << "an error, not a timeout: " << thrown.message;
  EXPECT_TRUE(contains(thrown.message,
                       "all_gather of 3 bf16 elements per rank (operation #2) "
                       "failed in NCCL group 'pp'"))
      << thrown.message;
  EXPECT_TRUE(contains(thrown.message, "cudaErrorLaunchFailure")) << thrown.message;
  std::this_thread::sleep_for(milliseconds(40));  // operation #3's deadline passes too
  EXPECT_EQ(group.aborts.load(), 1);
  EXPECT_EQ(thrown_by([&] { watchdog.rethrow_failure(); }).message, thrown.message);
  EXPECT_EQ(thrown_by([&] { watchdog.wait_all(); }).message, thrown.message);
  EXPECT_EQ(watchdog.pending(), 0u) << "pending operations are dropped after an abort";
}

TEST(WatchdogTest, TheGroupsAsyncErrorFailsTheOldestOperationInFlight) {
  FakeGroup group;
  Watchdog watchdog(pipeline_group(), group, every(std::chrono::milliseconds(1)));
  auto done = watch(watchdog, "all_reduce of 1 f32 elements", 4, milliseconds(10'000));
  done->state = State::kDone;
  watch(watchdog, "all_reduce of 2 f32 elements", 5, milliseconds(10'000));
  watch(watchdog, "all_reduce of 3 f32 elements", 6, milliseconds(10'000));
  group.set_error("remote process exited or there was a network error");

  const Thrown thrown = thrown_by([&] { watchdog.wait_all(); });
  EXPECT_FALSE(thrown.timeout) << thrown.message;
  EXPECT_TRUE(contains(thrown.message, "NCCL group 'pp' (rank 1 of 4")) << thrown.message;
  EXPECT_TRUE(contains(thrown.message, "during all_reduce of 2 f32 elements (operation #5)"))
      << thrown.message;
  EXPECT_TRUE(contains(thrown.message, "remote process exited")) << thrown.message;
  EXPECT_TRUE(eventually([&] { return group.aborts.load() == 1; })) << "never aborted";
}

TEST(WatchdogTest, OperationsAfterAFailureFailAtOnceAndAreNeverPolled) {
  FakeGroup group;
  Watchdog watchdog(pipeline_group(), group, every(std::chrono::milliseconds(1)));
  watch(watchdog, "all_reduce of 10 f32 elements", 1, milliseconds(5));
  const Thrown first = thrown_by([&] { watchdog.wait_all(); });
  ASSERT_TRUE(first.timeout) << first.message;
  ASSERT_TRUE(eventually([&] { return group.aborts.load() == 1; })) << "never aborted";

  auto after = std::make_shared<FakeOperation>();
  const Clock::time_point start = Clock::now();
  const Thrown refused = thrown_by([&] {
    watchdog.watch(WatchedOperation{"all_reduce of 10 f32 elements", 2, "", milliseconds(10'000)},
                   std::make_unique<FakeCompletion>(after));
  });
  EXPECT_LT(Clock::now() - start, milliseconds(100));
  EXPECT_EQ(refused.message, first.message);
  EXPECT_TRUE(refused.timeout);
  EXPECT_TRUE(eventually([&] { return watchdog.pending() == 0; }));
  std::this_thread::sleep_for(milliseconds(10));
  EXPECT_EQ(after->polls.load(), 0);
  EXPECT_EQ(group.aborts.load(), 1);
}

TEST(WatchdogTest, AFailureFoundByTheCallerAbortsOnceAndTheFirstWins) {
  FakeGroup group;
  Watchdog watchdog(pipeline_group(), group, every(std::chrono::milliseconds(1)));
  auto pending = watch(watchdog, "all_reduce of 10 f32 elements", 1, milliseconds(10'000));
  const Thrown first =
      thrown_by([&] { watchdog.fail(true, "send of 4 f32 elements (operation #2) stuck"); });
  EXPECT_TRUE(first.timeout);
  EXPECT_EQ(first.message,
            "send of 4 f32 elements (operation #2) stuck; the communicator was aborted");
  const Thrown second = thrown_by([&] { watchdog.fail(false, "ncclSend failed"); });
  EXPECT_EQ(second.message, first.message);
  EXPECT_TRUE(second.timeout);
  EXPECT_EQ(thrown_by([&] { watchdog.wait_all(); }).message, first.message);
  EXPECT_EQ(group.aborts.load(), 1);
}

TEST(WatchdogTest, TheDestructorReturnsPromptlyWithOperationsPending) {
  FakeGroup group;
  auto pending = std::make_shared<FakeOperation>();
  Clock::time_point start;
  {
    // A poll interval far longer than the test: the destructor must wake the thread, not wait.
    Watchdog watchdog(pipeline_group(), group, every(std::chrono::seconds(10)));
    watchdog.watch(WatchedOperation{"all_reduce of 10 f32 elements", 1, "", milliseconds(60'000)},
                   std::make_unique<FakeCompletion>(pending));
    start = Clock::now();
  }
  EXPECT_LT(Clock::now() - start, milliseconds(200));
  EXPECT_EQ(group.aborts.load(), 0) << "stopping is not a failure";
  {
    Watchdog idle(pipeline_group(), group, every(std::chrono::seconds(10)));
    start = Clock::now();
  }
  EXPECT_LT(Clock::now() - start, milliseconds(200));
}

TEST(WatchdogTest, SleepsWhileIdleAndPollsOncePerIntervalWhileBusy) {
  FakeGroup group;
  Watchdog watchdog(pipeline_group(), group, every(std::chrono::milliseconds(10)));
  std::this_thread::sleep_for(milliseconds(50));
  EXPECT_EQ(group.async_polls.load(), 0) << "polled with nothing pending";

  auto operation = watch(watchdog, "all_reduce of 10 f32 elements", 1, milliseconds(10'000));
  std::this_thread::sleep_for(milliseconds(100));
  const int polls = operation->polls.load();
  EXPECT_GE(polls, 1);
  EXPECT_LE(polls, 11) << "about one poll per 10 ms interval over 100 ms";
  operation->state = State::kDone;
  ASSERT_TRUE(eventually([&] { return watchdog.pending() == 0; }));
  const int async_polls = group.async_polls.load();
  std::this_thread::sleep_for(milliseconds(50));
  EXPECT_EQ(group.async_polls.load(), async_polls) << "polled again once idle";
}

TEST(WatchdogTest, AWaiterWakesTheThreadInsteadOfWaitingOutThePollInterval) {
  FakeGroup group;
  Watchdog watchdog(pipeline_group(), group, every(std::chrono::seconds(10)));
  auto operation = watch(watchdog, "all_reduce of 10 f32 elements", 1, milliseconds(60'000));
  operation->state = State::kDone;
  const Clock::time_point start = Clock::now();
  watchdog.wait_all();
  EXPECT_LT(Clock::now() - start, milliseconds(500));
}

TEST(WatchdogTest, ATimeoutOfYearsNeverExpires) {
  FakeGroup group;
  Watchdog watchdog(pipeline_group(), group, every(std::chrono::milliseconds(1)));
  watch(watchdog, "all_reduce of 10 f32 elements", 1, milliseconds::max());
  std::this_thread::sleep_for(milliseconds(20));
  EXPECT_FALSE(watchdog.failed());
  EXPECT_EQ(group.aborts.load(), 0);
}

TEST(WatchdogTest, RefusesAPollIntervalOfZero) {
  FakeGroup group;
  EXPECT_THROW(Watchdog(pipeline_group(), group, every(std::chrono::microseconds(0))), Error);
}

}  // namespace
}  // namespace loom::parallel
