// TimedCommunicator forwards every call unchanged (results, byte counts in the wrapped
// communicator) and adds the blocked time to the right operation kind; it is stream-ordered where
// the wrapped communicator is, and times its synchronize().
#include "parallel/timed_communicator.h"

#include <chrono>
#include <thread>
#include <vector>

#include "parallel/solo_communicator.h"
#include "test_util.h"

namespace loom::parallel {
namespace {

TEST(TimedCommunicatorTest, ForwardsCallsAndAccountsTimePerOperation) {
  SoloCommunicator inner("tp");
  TimedCommunicator timed(inner);
  EXPECT_EQ(timed.size(), 1);
  EXPECT_EQ(timed.name(), "tp");
  std::vector<float> send = testing::random_floats(1000, 1), recv(1000, 0.0f);
  timed.all_reduce(send.data(), recv.data(), recv.size(), DType::kF32, ReduceOp::kSum);
  EXPECT_EQ(recv, send);
  {
    std::vector<float> gathered(1000, 0.0f);
    auto request = timed.all_gather_async(send.data(), gathered.data(), 1000, DType::kF32);
    request->wait();
    EXPECT_EQ(gathered, send);
  }
  EXPECT_EQ(inner.stats().calls[static_cast<int>(CommOp::kAllReduce)], 1u);
  EXPECT_EQ(inner.stats().bytes[static_cast<int>(CommOp::kAllGather)], 4000u);
  EXPECT_EQ(timed.stats().total_bytes(), 0u);  // bytes stay with the wrapped communicator
  EXPECT_GE(timed.seconds(CommOp::kAllReduce), 0.0);
  EXPECT_GE(timed.seconds(CommOp::kAllGather), 0.0);
  EXPECT_EQ(timed.seconds(CommOp::kReduceScatter), 0.0);
  EXPECT_DOUBLE_EQ(timed.total_seconds(), timed.seconds(CommOp::kAllReduce) + timed.seconds(CommOp::kAllGather));
  timed.reset_time();
  EXPECT_EQ(timed.total_seconds(), 0.0);
}

// A one-rank communicator that claims stream order and takes 20 ms to synchronize.
class SlowToSynchronize final : public SoloCommunicator {
 public:
  SlowToSynchronize() : SoloCommunicator("dp") {}
  bool stream_ordered() const override { return true; }
  void synchronize() override {
    ++synchronized;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  int synchronized = 0;
};

TEST(TimedCommunicatorTest, ForwardsStreamOrderAndTimesSynchronize) {
  SoloCommunicator host_ordered("tp");
  EXPECT_FALSE(TimedCommunicator(host_ordered).stream_ordered());

  SlowToSynchronize inner;
  TimedCommunicator timed(inner);
  EXPECT_TRUE(timed.stream_ordered());
  timed.synchronize();
  EXPECT_EQ(inner.synchronized, 1);
  EXPECT_GE(timed.synchronize_seconds(), 0.019);
  EXPECT_DOUBLE_EQ(timed.total_seconds(), timed.synchronize_seconds());
  timed.reset_time();
  EXPECT_EQ(timed.synchronize_seconds(), 0.0);
}

}  // namespace
}  // namespace loom::parallel
