// SoloCommunicator, the one-rank communicator: every collective is a copy (or nothing in place),
// the asynchronous ones are complete when posted, and the traffic counters follow the convention
// of communicator.h with size 1.
#include "parallel/solo_communicator.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/base/check.h"
#include "test_util.h"

namespace loom::parallel {
namespace {

using loom::testing::all_close;
using loom::testing::poisoned;
using loom::testing::random_floats;
using loom::testing::random_ints;

uint64_t calls(const Communicator& comm, CommOp op) {
  return comm.stats().calls[static_cast<int>(op)];
}
uint64_t bytes(const Communicator& comm, CommOp op) {
  return comm.stats().bytes[static_cast<int>(op)];
}

TEST(SoloCommunicator, IsOneRankNamedAsGiven) {
  SoloCommunicator comm("tp");
  EXPECT_EQ(comm.rank(), 0);
  EXPECT_EQ(comm.size(), 1);
  EXPECT_EQ(comm.name(), "tp");
  EXPECT_EQ(comm.world_rank_of(0), 0);
  EXPECT_THROW(comm.world_rank_of(1), Error);
  std::unique_ptr<Communicator> child = comm.split(3, 7, "dp");
  EXPECT_EQ(child->size(), 1);
  EXPECT_EQ(child->name(), "dp");
}

TEST(SoloCommunicator, BlockingCollectivesCopyOrLeaveInPlace) {
  SoloCommunicator comm;
  const std::vector<float> input = random_floats(100, 1);
  std::vector<float> out = poisoned(100);
  comm.all_reduce(input.data(), out.data(), 100, DType::kF32, ReduceOp::kSum);
  EXPECT_TRUE(all_close(out, input, 0, 0)) << "all_reduce out of place";

  std::vector<float> in_place = input;
  comm.all_reduce(in_place.data(), in_place.data(), 100, DType::kF32, ReduceOp::kMax);
  EXPECT_TRUE(all_close(in_place, input, 0, 0)) << "all_reduce in place";

  out = poisoned(100);
  comm.all_gather(input.data(), out.data(), 100, DType::kF32);
  EXPECT_TRUE(all_close(out, input, 0, 0)) << "all_gather";

  const std::vector<int32_t> ints = random_ints(50, 2, -1000, 1000);
  std::vector<int32_t> ints_out(50, INT32_MIN);
  comm.reduce_scatter(ints.data(), ints_out.data(), 50, DType::kI32, ReduceOp::kSum);
  EXPECT_TRUE(all_close(ints_out, ints, 0, 0)) << "reduce_scatter";

  std::vector<float> broadcast = input;
  comm.broadcast(broadcast.data(), 100, DType::kF32, 0);
  EXPECT_TRUE(all_close(broadcast, input, 0, 0)) << "broadcast";
  EXPECT_THROW(comm.broadcast(broadcast.data(), 100, DType::kF32, 1), Error);
  comm.barrier();
}

TEST(SoloCommunicator, AsyncCollectivesAreCompleteWhenPosted) {
  SoloCommunicator comm;
  const std::vector<float> input = random_floats(64, 3);
  const std::vector<int32_t> ints = random_ints(64, 4, -50, 50);
  std::vector<float> reduced = poisoned(64);
  std::vector<float> gathered = poisoned(64);
  std::vector<int32_t> scattered(64, INT32_MIN);
  std::vector<float> in_place = input;

  // Several in flight, waited for in reverse order; each result is there before its wait.
  std::unique_ptr<CommRequest> a =
      comm.all_reduce_async(input.data(), reduced.data(), 64, DType::kF32, ReduceOp::kSum);
  std::unique_ptr<CommRequest> b =
      comm.reduce_scatter_async(ints.data(), scattered.data(), 64, DType::kI32, ReduceOp::kMax);
  std::unique_ptr<CommRequest> c = comm.all_gather_async(input.data(), gathered.data(), 64,
                                                         DType::kF32);
  std::unique_ptr<CommRequest> d =
      comm.all_reduce_async(in_place.data(), in_place.data(), 64, DType::kF32, ReduceOp::kSum);
  EXPECT_TRUE(all_close(reduced, input, 0, 0)) << "all_reduce_async";
  EXPECT_TRUE(all_close(scattered, ints, 0, 0)) << "reduce_scatter_async";
  EXPECT_TRUE(all_close(gathered, input, 0, 0)) << "all_gather_async";
  EXPECT_TRUE(all_close(in_place, input, 0, 0)) << "all_reduce_async in place";
  for (CommRequest* request : {d.get(), c.get(), b.get(), a.get()}) {
    EXPECT_TRUE(request->test());
    request->wait();
    request->wait();  // again: still returns at once
  }
  d.reset();  // destroying a (complete) request does nothing more
}

TEST(SoloCommunicator, StatsCountBlockingAndAsyncAlike) {
  SoloCommunicator comm;
  std::vector<float> f(64, 1.0f);
  std::vector<uint16_t> halves(64, 0);
  comm.all_reduce(f.data(), f.data(), 10, DType::kF32, ReduceOp::kSum);       // 40
  comm.all_reduce_async(f.data(), f.data(), 10, DType::kF32, ReduceOp::kSum);  // 40
  comm.all_gather(halves.data(), halves.data(), 3, DType::kBF16);              // 6
  comm.all_gather_async(halves.data(), halves.data(), 3, DType::kBF16);        // 6
  comm.reduce_scatter(f.data(), f.data(), 5, DType::kF32, ReduceOp::kMax);     // 20
  comm.reduce_scatter_async(f.data(), f.data(), 5, DType::kF32, ReduceOp::kMax);  // 20
  comm.broadcast(f.data(), 7, DType::kF32, 0);                                     // 28
  EXPECT_EQ(calls(comm, CommOp::kAllReduce), 2u);
  EXPECT_EQ(bytes(comm, CommOp::kAllReduce), 80u);
  EXPECT_EQ(calls(comm, CommOp::kAllGather), 2u);
  EXPECT_EQ(bytes(comm, CommOp::kAllGather), 12u);
  EXPECT_EQ(calls(comm, CommOp::kReduceScatter), 2u);
  EXPECT_EQ(bytes(comm, CommOp::kReduceScatter), 40u);
  EXPECT_EQ(calls(comm, CommOp::kBroadcast), 1u);
  EXPECT_EQ(comm.stats().total_bytes(), 80u + 12u + 40u + 28u);
}

TEST(SoloCommunicator, PointToPointHasNoPeer) {
  SoloCommunicator comm;
  std::vector<float> buffer(4, 0.0f);
  EXPECT_THROW(comm.send(buffer.data(), 4, DType::kF32, 0, 0), Error);
  EXPECT_THROW(comm.recv(buffer.data(), 4, DType::kF32, 0, 0), Error);
  const P2POp op{P2POp::Kind::kSend, buffer.data(), 4, DType::kF32, 0, 0};
  EXPECT_THROW(comm.send_recv_batch(std::span<const P2POp>(&op, 1)), Error);
  comm.send_recv_batch({});
}

}  // namespace
}  // namespace loom::parallel
