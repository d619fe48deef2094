// Multi-rank tests of MpiCommunicator, run under mpirun at world sizes 1, 2, 3, 4 and 8: every
// rank computes the data every other rank contributes from (seed, rank), as nccl-tests does, and
// checks its result exactly (the values are small integers, so float sums are exact in any order).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "core/base/check.h"
#include "mpi_test_util.h"
#include "parallel/mpi_communicator.h"
#include "test_util.h"

namespace loom::parallel {
namespace {

using loom::testing::all_close;
using loom::testing::mpi_world;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Element i of rank `rank`'s input under `seed`: an integer in [-100, 100] (f32), a wider one
// (i32), or raw 16-bit patterns (bf16, only moved, never reduced).
template <typename T>
T value(uint32_t seed, int rank, size_t i) {
  const uint64_t h = (uint64_t{seed} * 7919u + static_cast<uint64_t>(rank) * 104729u +
                      static_cast<uint64_t>(i) * 31u) ^
                     (static_cast<uint64_t>(i) >> 3);
  if constexpr (std::is_same_v<T, float>)
    return static_cast<float>(static_cast<int>(h % 201) - 100);
  if constexpr (std::is_same_v<T, int32_t>) return static_cast<int32_t>(h % 2000001) - 1000000;
  if constexpr (std::is_same_v<T, uint16_t>) return static_cast<uint16_t>(h & 0xffffu);
}

template <typename T>
DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::kF32;
  if constexpr (std::is_same_v<T, int32_t>) return DType::kI32;
  if constexpr (std::is_same_v<T, uint16_t>) return DType::kBF16;
}

template <typename T>
std::vector<T> input(uint32_t seed, int rank, size_t count) {
  std::vector<T> out(count);
  for (size_t i = 0; i < count; ++i) out[i] = value<T>(seed, rank, i);
  return out;
}

// A value no input takes, so an element the operation forgot to write fails the comparison.
template <typename T>
std::vector<T> poisoned(size_t count) {
  if constexpr (std::is_same_v<T, float>) return loom::testing::poisoned(count);
  if constexpr (std::is_same_v<T, int32_t>) return std::vector<T>(count, INT32_MIN);
  if constexpr (std::is_same_v<T, uint16_t>) return std::vector<T>(count, 0xdeadu & 0xffffu);
}

// op over ranks [first, first + n) of element i.
template <typename T>
T reduced(uint32_t seed, const std::vector<int>& ranks, size_t i, ReduceOp op) {
  T out = value<T>(seed, ranks[0], i);
  for (size_t r = 1; r < ranks.size(); ++r) {
    const T v = value<T>(seed, ranks[r], i);
    out = op == ReduceOp::kSum ? static_cast<T>(out + v) : std::max(out, v);
  }
  return out;
}

std::vector<int> all_ranks(int size) {
  std::vector<int> out(static_cast<size_t>(size));
  for (int r = 0; r < size; ++r) out[r] = r;
  return out;
}

template <typename T>
void check_all_reduce(Communicator& comm, size_t count, ReduceOp op, bool in_place, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "all_reduce " << dtype_name(dtype_of<T>()) << " count "
                                    << count << (op == ReduceOp::kSum ? " sum" : " max")
                                    << (in_place ? " in place" : " out of place"));
  const std::vector<int> ranks = all_ranks(comm.size());
  std::vector<T> expected(count);
  for (size_t i = 0; i < count; ++i) expected[i] = reduced<T>(seed, ranks, i, op);
  const std::vector<T> mine = input<T>(seed, comm.rank(), count);
  if (in_place) {
    std::vector<T> buffer = mine;
    comm.all_reduce(buffer.data(), buffer.data(), count, dtype_of<T>(), op);
    EXPECT_TRUE(all_close(buffer, expected, 0, 0));
  } else {
    std::vector<T> send = mine;
    std::vector<T> recv = poisoned<T>(count);
    comm.all_reduce(send.data(), recv.data(), count, dtype_of<T>(), op);
    EXPECT_TRUE(all_close(recv, expected, 0, 0));
    EXPECT_TRUE(all_close(send, mine, 0, 0)) << "the send buffer changed";
  }
}

TEST(MpiCommunicator, AllReduceSumAndMaxInAndOutOfPlace) {
  Communicator& world = mpi_world();
  uint32_t seed = 1;
  for (size_t count : {size_t{1}, size_t{7}, size_t{1000}, size_t{1} << 20}) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
      for (bool in_place : {true, false}) {
        check_all_reduce<float>(world, count, op, in_place, seed++);
        check_all_reduce<int32_t>(world, count, op, in_place, seed++);
      }
    }
  }
}

template <typename T>
void check_all_gather(Communicator& comm, size_t count, bool in_place, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "all_gather " << dtype_name(dtype_of<T>()) << " count "
                                    << count << (in_place ? " in place" : " out of place"));
  const size_t size = static_cast<size_t>(comm.size());
  std::vector<T> expected(size * count);
  for (size_t r = 0; r < size; ++r) {
    for (size_t i = 0; i < count; ++i)
      expected[r * count + i] = value<T>(seed, static_cast<int>(r), i);
  }
  const std::vector<T> mine = input<T>(seed, comm.rank(), count);
  std::vector<T> recv = poisoned<T>(size * count);
  if (in_place) {
    std::copy(mine.begin(), mine.end(), recv.begin() + static_cast<ptrdiff_t>(comm.rank() * count));
    comm.all_gather(recv.data() + comm.rank() * count, recv.data(), count, dtype_of<T>());
  } else {
    comm.all_gather(mine.data(), recv.data(), count, dtype_of<T>());
  }
  EXPECT_TRUE(all_close(recv, expected, 0, 0));
}

TEST(MpiCommunicator, AllGather) {
  Communicator& world = mpi_world();
  uint32_t seed = 100;
  for (size_t count : {size_t{1}, size_t{7}, size_t{1000}, size_t{1} << 16}) {
    for (bool in_place : {false, true}) {
      check_all_gather<float>(world, count, in_place, seed++);
      check_all_gather<int32_t>(world, count, in_place, seed++);
      check_all_gather<uint16_t>(world, count, in_place, seed++);
    }
  }
}

template <typename T>
void check_reduce_scatter(Communicator& comm, size_t count, ReduceOp op, uint32_t seed) {
  SCOPED_TRACE(::testing::Message()
               << "reduce_scatter " << dtype_name(dtype_of<T>()) << " count per rank " << count
               << (op == ReduceOp::kSum ? " sum" : " max"));
  const size_t size = static_cast<size_t>(comm.size());
  const std::vector<int> ranks = all_ranks(comm.size());
  const size_t first = static_cast<size_t>(comm.rank()) * count;
  std::vector<T> expected(count);
  for (size_t i = 0; i < count; ++i) expected[i] = reduced<T>(seed, ranks, first + i, op);
  const std::vector<T> send = input<T>(seed, comm.rank(), size * count);
  std::vector<T> recv = poisoned<T>(count);
  comm.reduce_scatter(send.data(), recv.data(), count, dtype_of<T>(), op);
  EXPECT_TRUE(all_close(recv, expected, 0, 0));
}

TEST(MpiCommunicator, ReduceScatter) {
  Communicator& world = mpi_world();
  uint32_t seed = 200;
  for (size_t count : {size_t{1}, size_t{7}, size_t{1000}, size_t{1} << 16}) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
      check_reduce_scatter<float>(world, count, op, seed++);
      check_reduce_scatter<int32_t>(world, count, op, seed++);
    }
  }
}

template <typename T>
void check_broadcast(Communicator& comm, size_t count, int root, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "broadcast " << dtype_name(dtype_of<T>()) << " count "
                                    << count << " root " << root);
  const std::vector<T> expected = input<T>(seed, root, count);
  std::vector<T> buffer = comm.rank() == root ? expected : poisoned<T>(count);
  comm.broadcast(buffer.data(), count, dtype_of<T>(), root);
  EXPECT_TRUE(all_close(buffer, expected, 0, 0));
}

TEST(MpiCommunicator, BroadcastFromEveryRoot) {
  Communicator& world = mpi_world();
  uint32_t seed = 300;
  for (int root = 0; root < world.size(); ++root) {
    for (size_t count : {size_t{1}, size_t{1000}, size_t{1} << 16}) {
      check_broadcast<float>(world, count, root, seed++);
      check_broadcast<int32_t>(world, count, root, seed++);
      check_broadcast<uint16_t>(world, count, root, seed++);
    }
  }
}

TEST(MpiCommunicator, ZeroCountMovesNothing) {
  Communicator& world = mpi_world();
  world.all_reduce(nullptr, nullptr, 0, DType::kF32, ReduceOp::kSum);
  world.all_gather(nullptr, nullptr, 0, DType::kI32);
  world.reduce_scatter(nullptr, nullptr, 0, DType::kF32, ReduceOp::kMax);
  world.broadcast(nullptr, 0, DType::kF32, 0);
}

// Even ranks send then receive, odd ranks receive then send: no cycle of blocked sends even when
// the message is too large to be buffered.
TEST(MpiCommunicator, SendRecvRing) {
  Communicator& world = mpi_world();
  if (world.size() == 1) GTEST_SKIP() << "a ring of one rank has no peer to send to";
  const int next = (world.rank() + 1) % world.size();
  const int prev = (world.rank() + world.size() - 1) % world.size();
  for (size_t count : {size_t{1}, size_t{1000}, size_t{1} << 16}) {
    SCOPED_TRACE(::testing::Message() << "count " << count);
    const uint32_t seed = 400 + static_cast<uint32_t>(count);
    const std::vector<float> mine = input<float>(seed, world.rank(), count);
    std::vector<float> got = poisoned<float>(count);
    if (world.rank() % 2 == 0) {
      world.send(mine.data(), count, DType::kF32, next, 5);
      world.recv(got.data(), count, DType::kF32, prev, 5);
    } else {
      world.recv(got.data(), count, DType::kF32, prev, 5);
      world.send(mine.data(), count, DType::kF32, next, 5);
    }
    EXPECT_TRUE(all_close(got, input<float>(seed, prev, count), 0, 0));
  }
}

TEST(MpiCommunicator, SendRecvBatchExchangesBothWaysAroundTheRing) {
  Communicator& world = mpi_world();
  const int next = (world.rank() + 1) % world.size();
  const int prev = (world.rank() + world.size() - 1) % world.size();
  for (size_t count : {size_t{1}, size_t{1} << 16}) {
    SCOPED_TRACE(::testing::Message() << "count " << count);
    const std::vector<float> forward = input<float>(500, world.rank(), count);
    const std::vector<int32_t> backward = input<int32_t>(501, world.rank(), count);
    std::vector<float> from_prev = poisoned<float>(count);
    std::vector<int32_t> from_next = poisoned<int32_t>(count);
    const P2POp ops[] = {
        {P2POp::Kind::kRecv, from_prev.data(), count, DType::kF32, prev, 1},
        {P2POp::Kind::kRecv, from_next.data(), count, DType::kI32, next, 2},
        {P2POp::Kind::kSend, const_cast<float*>(forward.data()), count, DType::kF32, next, 1},
        {P2POp::Kind::kSend, const_cast<int32_t*>(backward.data()), count, DType::kI32, prev, 2},
    };
    world.send_recv_batch(ops);
    EXPECT_TRUE(all_close(from_prev, input<float>(500, prev, count), 0, 0));
    EXPECT_TRUE(all_close(from_next, input<int32_t>(501, next, count), 0, 0));
  }
}

// Every rank posts all its sends first and returns at once (a pipeline stage sending its
// activations), then receives with blocking calls: with blocking sends of messages too large to
// be buffered this order would deadlock. Messages with one tag arrive in the order they were sent.
TEST(MpiCommunicator, SendRecvBatchAsyncSendsDoNotBlockAndKeepTheirOrder) {
  Communicator& world = mpi_world();
  if (world.size() == 1) GTEST_SKIP() << "a ring of one rank has no peer to send to";
  const int next = (world.rank() + 1) % world.size();
  const int prev = (world.rank() + world.size() - 1) % world.size();
  const size_t count = size_t{1} << 16;
  constexpr int kMessages = 3;
  std::vector<std::vector<float>> mine, got;
  std::vector<std::unique_ptr<CommRequest>> sends;
  for (int i = 0; i < kMessages; ++i) {
    mine.push_back(input<float>(600 + static_cast<uint32_t>(i), world.rank(), count));
    const P2POp op{P2POp::Kind::kSend, mine.back().data(), count, DType::kF32, next, 4};
    sends.push_back(world.send_recv_batch_async(std::span<const P2POp>(&op, 1)));
  }
  for (int i = 0; i < kMessages; ++i) {
    got.push_back(poisoned<float>(count));
    world.recv(got.back().data(), count, DType::kF32, prev, 4);
    EXPECT_TRUE(all_close(got.back(), input<float>(600 + static_cast<uint32_t>(i), prev, count), 0, 0))
        << "message " << i;
  }
  for (auto& request : sends) request->wait();
  EXPECT_TRUE(sends[0]->test());
  // Receives posted asynchronously too, in both directions at once.
  std::vector<float> from_prev = poisoned<float>(count), from_next = poisoned<float>(count);
  const P2POp ops[] = {
      {P2POp::Kind::kRecv, from_prev.data(), count, DType::kF32, prev, 1},
      {P2POp::Kind::kRecv, from_next.data(), count, DType::kF32, next, 2},
      {P2POp::Kind::kSend, mine[0].data(), count, DType::kF32, next, 1},
      {P2POp::Kind::kSend, mine[1].data(), count, DType::kF32, prev, 2},
  };
  std::unique_ptr<CommRequest> request = world.send_recv_batch_async(ops);
  request->wait();
  EXPECT_TRUE(all_close(from_prev, input<float>(600, prev, count), 0, 0));
  EXPECT_TRUE(all_close(from_next, input<float>(601, next, count), 0, 0));
}

TEST(MpiCommunicator, Barrier) {
  Communicator& world = mpi_world();
  const uint64_t before = world.stats().calls[static_cast<int>(CommOp::kBarrier)];
  for (int i = 0; i < 3; ++i) world.barrier();
  EXPECT_EQ(world.stats().calls[static_cast<int>(CommOp::kBarrier)], before + 3);
}

// Sum and gather of the world ranks inside `group`, whose members are `members` (world ranks in
// group-rank order).
void check_group(Communicator& group, const std::vector<int>& members, const std::string& name) {
  SCOPED_TRACE("group " + name);
  ASSERT_EQ(group.size(), static_cast<int>(members.size()));
  EXPECT_EQ(group.name(), name);
  for (int r = 0; r < group.size(); ++r)
    EXPECT_EQ(group.world_rank_of(r), members[r]) << "rank " << r;
  EXPECT_EQ(group.world_rank_of(group.rank()), mpi_world().rank());

  int32_t sum = mpi_world().rank();
  group.all_reduce(&sum, &sum, 1, DType::kI32, ReduceOp::kSum);
  int32_t expected_sum = 0;
  for (int m : members) expected_sum += m;
  EXPECT_EQ(sum, expected_sum);

  const int32_t me = mpi_world().rank();
  std::vector<int32_t> gathered(members.size(), -1);
  group.all_gather(&me, gathered.data(), 1, DType::kI32);
  EXPECT_EQ(gathered, std::vector<int32_t>(members.begin(), members.end()));

  int32_t from_root = me;
  group.broadcast(&from_root, 1, DType::kI32, group.size() - 1);
  EXPECT_EQ(from_root, members.back());
}

TEST(MpiCommunicator, SplitByParityAndReversedKey) {
  Communicator& world = mpi_world();
  const int rank = world.rank();
  const int size = world.size();

  std::unique_ptr<Communicator> parity = world.split(rank % 2, rank, "parity");
  std::vector<int> members;
  for (int r = rank % 2; r < size; r += 2) members.push_back(r);
  EXPECT_EQ(parity->rank(), rank / 2);
  check_group(*parity, members, "parity");

  std::unique_ptr<Communicator> reversed = world.split(0, size - rank, "reversed");
  members.clear();
  for (int r = size - 1; r >= 0; --r) members.push_back(r);
  EXPECT_EQ(reversed->rank(), size - 1 - rank);
  check_group(*reversed, members, "reversed");
}

// A tp x dp grid, TP fastest (DESIGN.md decision 4), and a split of a split.
TEST(MpiCommunicator, SplitIntoGrid) {
  Communicator& world = mpi_world();
  const int rank = world.rank();
  const int size = world.size();
  const int tp = size % 2 == 0 ? 2 : 1;

  std::unique_ptr<Communicator> tp_group = world.split(rank / tp, rank % tp, "tp");
  std::vector<int> tp_members;
  for (int r = (rank / tp) * tp; r < (rank / tp + 1) * tp; ++r) tp_members.push_back(r);
  check_group(*tp_group, tp_members, "tp");

  std::unique_ptr<Communicator> dp_group = world.split(rank % tp, rank / tp, "dp");
  std::vector<int> dp_members;
  for (int r = rank % tp; r < size; r += tp) dp_members.push_back(r);
  check_group(*dp_group, dp_members, "dp");

  // Halve the dp group: the first half and the second half of its ranks.
  const int half = (dp_group->size() + 1) / 2;
  const bool upper = dp_group->rank() >= half;
  std::unique_ptr<Communicator> nested =
      dp_group->split(upper ? 1 : 0, dp_group->rank(), "dp_half");
  std::vector<int> nested_members;
  for (int r = upper ? half : 0; r < (upper ? dp_group->size() : half); ++r) {
    nested_members.push_back(dp_members[r]);
  }
  check_group(*nested, nested_members, "dp_half");
}

TEST(MpiCommunicator, StatsCountPayloadBytesPerConvention) {
  Communicator& world = mpi_world();
  const uint64_t size = static_cast<uint64_t>(world.size());
  const CommStats world_before = world.stats();
  std::unique_ptr<Communicator> comm = world.split(0, world.rank(), "stats");
  EXPECT_EQ(world.stats().total_bytes(), world_before.total_bytes()) << "split moved payload";
  for (int k = 0; k < static_cast<int>(CommOp::kCount); ++k) {
    EXPECT_EQ(world.stats().calls[k], world_before.calls[k])
        << "split counted as a call of " << comm_op_name(static_cast<CommOp>(k));
  }

  std::vector<float> f(64 * size, 1.0f);
  std::vector<int32_t> i32(64 * size, 1);
  std::vector<uint16_t> b16(64, 0);
  comm->all_reduce(f.data(), f.data(), 10, DType::kF32, ReduceOp::kSum);  // 10 * 4
  comm->all_gather(i32.data(), i32.data() + 32 * size, 3, DType::kI32);   // 3 * size * 4
  comm->reduce_scatter(f.data(), f.data() + 32 * size, 5, DType::kF32,
                       ReduceOp::kMax);             // 5 * size * 4
  comm->broadcast(b16.data(), 7, DType::kBF16, 0);  // 7 * 2
  comm->barrier();                                  // 0
  const int next = (comm->rank() + 1) % comm->size();
  const int prev = (comm->rank() + comm->size() - 1) % comm->size();
  const P2POp ring[] = {{P2POp::Kind::kSend, f.data(), 11, DType::kF32, next, 0},  // 11 * 4
                        {P2POp::Kind::kRecv, f.data() + 16, 11, DType::kF32, prev, 0}};
  comm->send_recv_batch(ring);

  const CommStats& stats = comm->stats();
  auto calls = [&](CommOp op) { return stats.calls[static_cast<int>(op)]; };
  auto bytes = [&](CommOp op) { return stats.bytes[static_cast<int>(op)]; };
  EXPECT_EQ(calls(CommOp::kAllReduce), 1u);
  EXPECT_EQ(bytes(CommOp::kAllReduce), 40u);
  EXPECT_EQ(calls(CommOp::kAllGather), 1u);
  EXPECT_EQ(bytes(CommOp::kAllGather), 12u * size);
  EXPECT_EQ(calls(CommOp::kReduceScatter), 1u);
  EXPECT_EQ(bytes(CommOp::kReduceScatter), 20u * size);
  EXPECT_EQ(calls(CommOp::kBroadcast), 1u);
  EXPECT_EQ(bytes(CommOp::kBroadcast), 14u);
  EXPECT_EQ(calls(CommOp::kBarrier), 1u);
  EXPECT_EQ(bytes(CommOp::kBarrier), 0u);
  EXPECT_EQ(calls(CommOp::kSend), 1u);
  EXPECT_EQ(bytes(CommOp::kSend), 44u);
  EXPECT_EQ(calls(CommOp::kRecv), 1u);
  EXPECT_EQ(bytes(CommOp::kRecv), 44u);
  EXPECT_EQ(stats.total_bytes(), 40u + 12u * size + 20u * size + 14u + 44u + 44u);

  comm->stats().reset();
  EXPECT_EQ(comm->stats().total_bytes(), 0u);
  EXPECT_EQ(comm->stats().calls[static_cast<int>(CommOp::kAllReduce)], 0u);
}

// --- asynchronous collectives --------------------------------------------------------------------

// One posted collective with its buffers and the result this rank expects, computed locally.
// The result is `expected_f32` or `expected_i32`, at the start of `f32` or `i32` (an in-place
// reduce_scatter writes the first block of its buffer).
struct AsyncCase {
  std::string label;
  std::vector<float> send_f32;  // out-of-place inputs, alive until the wait
  std::vector<int32_t> send_i32;
  std::vector<float> f32;
  std::vector<int32_t> i32;
  std::vector<float> expected_f32;
  std::vector<int32_t> expected_i32;
  std::unique_ptr<CommRequest> request;
};

// Posts a mix without waiting for any: reduce_scatter out of place (f32 sum) and in place (i32
// max), all_reduce in place (f32 sum) and out of place (i32 max), all_gather out of place (f32)
// and in place (i32).
std::vector<AsyncCase> post_mix(Communicator& comm, uint32_t seed, size_t count) {
  const size_t size = static_cast<size_t>(comm.size());
  const size_t rank = static_cast<size_t>(comm.rank());
  const std::vector<int> ranks = all_ranks(comm.size());
  std::vector<AsyncCase> cases(6);

  AsyncCase& scatter = cases[0];
  scatter.label = "reduce_scatter f32 sum out of place";
  scatter.send_f32 = input<float>(seed, comm.rank(), size * count);
  scatter.f32 = poisoned<float>(count);
  for (size_t i = 0; i < count; ++i) {
    scatter.expected_f32.push_back(reduced<float>(seed, ranks, rank * count + i, ReduceOp::kSum));
  }
  scatter.request = comm.reduce_scatter_async(scatter.send_f32.data(), scatter.f32.data(), count,
                                              DType::kF32, ReduceOp::kSum);

  AsyncCase& scatter_in_place = cases[1];
  scatter_in_place.label = "reduce_scatter i32 max in place";
  scatter_in_place.i32 = input<int32_t>(seed + 1, comm.rank(), size * count);
  for (size_t i = 0; i < count; ++i) {
    scatter_in_place.expected_i32.push_back(
        reduced<int32_t>(seed + 1, ranks, rank * count + i, ReduceOp::kMax));
  }
  scatter_in_place.request =
      comm.reduce_scatter_async(scatter_in_place.i32.data(), scatter_in_place.i32.data(), count,
                                DType::kI32, ReduceOp::kMax);

  AsyncCase& sum = cases[2];
  sum.label = "all_reduce f32 sum in place";
  sum.f32 = input<float>(seed + 2, comm.rank(), count);
  for (size_t i = 0; i < count; ++i) {
    sum.expected_f32.push_back(reduced<float>(seed + 2, ranks, i, ReduceOp::kSum));
  }
  sum.request =
      comm.all_reduce_async(sum.f32.data(), sum.f32.data(), count, DType::kF32, ReduceOp::kSum);

  AsyncCase& max = cases[3];
  max.label = "all_reduce i32 max out of place";
  max.send_i32 = input<int32_t>(seed + 3, comm.rank(), count);
  max.i32 = poisoned<int32_t>(count);
  for (size_t i = 0; i < count; ++i) {
    max.expected_i32.push_back(reduced<int32_t>(seed + 3, ranks, i, ReduceOp::kMax));
  }
  max.request = comm.all_reduce_async(max.send_i32.data(), max.i32.data(), count, DType::kI32,
                                      ReduceOp::kMax);

  AsyncCase& gather = cases[4];
  gather.label = "all_gather f32 out of place";
  gather.send_f32 = input<float>(seed + 4, comm.rank(), count);
  gather.f32 = poisoned<float>(size * count);
  for (size_t r = 0; r < size; ++r) {
    for (size_t i = 0; i < count; ++i) {
      gather.expected_f32.push_back(value<float>(seed + 4, static_cast<int>(r), i));
    }
  }
  gather.request =
      comm.all_gather_async(gather.send_f32.data(), gather.f32.data(), count, DType::kF32);

  AsyncCase& gather_in_place = cases[5];
  gather_in_place.label = "all_gather i32 in place";
  gather_in_place.i32 = poisoned<int32_t>(size * count);
  for (size_t r = 0; r < size; ++r) {
    for (size_t i = 0; i < count; ++i) {
      const int32_t v = value<int32_t>(seed + 5, static_cast<int>(r), i);
      gather_in_place.expected_i32.push_back(v);
      if (r == rank) gather_in_place.i32[r * count + i] = v;
    }
  }
  gather_in_place.request = comm.all_gather_async(gather_in_place.i32.data() + rank * count,
                                                  gather_in_place.i32.data(), count, DType::kI32);
  return cases;
}

template <typename T>
std::vector<T> slice(const std::vector<T>& v, size_t n) {
  return std::vector<T>(v.begin(), v.begin() + static_cast<ptrdiff_t>(n));
}

void check_mix(const std::vector<AsyncCase>& cases, size_t count) {
  for (const AsyncCase& c : cases) {
    SCOPED_TRACE(c.label + " count " + std::to_string(count));
    if (!c.expected_f32.empty()) {
      EXPECT_TRUE(all_close(slice(c.f32, c.expected_f32.size()), c.expected_f32,
                            0, 0));
    } else {
      EXPECT_TRUE(all_close(slice(c.i32, c.expected_i32.size()), c.expected_i32,
                            0, 0));
    }
  }
}

TEST(MpiCommunicator, AsyncCollectivesInFlightTogetherCompleteInAnyWaitOrder) {
  Communicator& world = mpi_world();
  uint32_t seed = 600;
  for (size_t count : {size_t{1}, size_t{1000}, size_t{1} << 16}) {
    // Two rounds in flight at once (twelve operations), waited for in reverse order of posting.
    std::vector<AsyncCase> first = post_mix(world, seed, count);
    std::vector<AsyncCase> second = post_mix(world, seed + 10, count);
    for (auto c = second.rbegin(); c != second.rend(); ++c) c->request->wait();
    for (auto c = first.rbegin(); c != first.rend(); ++c) c->request->wait();
    check_mix(first, count);
    check_mix(second, count);
    for (AsyncCase& c : first) {
      EXPECT_TRUE(c.request->test()) << c.label << ": a waited request must test complete";
      c.request->wait();  // again: returns at once
    }
    seed += 20;
  }
}

TEST(MpiCommunicator, AsyncTestBecomesTrueWithoutWait) {
  Communicator& world = mpi_world();
  const size_t count = 4096;
  std::vector<AsyncCase> cases = post_mix(world, 700, count);
  const Clock::time_point give_up = Clock::now() + std::chrono::seconds(20);
  for (AsyncCase& c : cases) {
    while (!c.request->test()) {
      ASSERT_LT(Clock::now(), give_up) << c.label << ": test() never became true";
    }
    EXPECT_TRUE(c.request->test()) << c.label;
  }
  check_mix(cases, count);
}

// A blocking collective posted behind requests still in flight completes on its own (every rank
// posts in the same order), and so do they afterwards.
TEST(MpiCommunicator, BlockingCallsWhileAsyncRequestsAreInFlight) {
  Communicator& world = mpi_world();
  const size_t count = 1000;
  std::vector<AsyncCase> cases = post_mix(world, 800, count);
  check_all_reduce<float>(world, 333, ReduceOp::kSum, true, 810);
  check_all_gather<int32_t>(world, 77, false, 811);
  check_broadcast<float>(world, 50, world.size() - 1, 812);
  world.barrier();
  for (AsyncCase& c : cases) c.request->wait();
  check_mix(cases, count);
}

TEST(MpiCommunicator, AsyncRequestDestroyedUnwaitedWaits) {
  Communicator& world = mpi_world();
  const size_t count = 1 << 16;
  std::vector<AsyncCase> cases = post_mix(world, 900, count);
  for (AsyncCase& c : cases) c.request.reset();  // each destructor waits
  check_mix(cases, count);
}

TEST(MpiCommunicator, AsyncStatsAreCountedWhenPosted) {
  Communicator& world = mpi_world();
  const uint64_t size = static_cast<uint64_t>(world.size());
  std::unique_ptr<Communicator> comm = world.split(0, world.rank(), "async_stats");
  std::vector<float> f(64 * size, 1.0f);
  std::vector<int32_t> i32(64 * size, 1);
  std::unique_ptr<CommRequest> reduce =
      comm->all_reduce_async(f.data(), f.data(), 10, DType::kF32, ReduceOp::kSum);  // 10 * 4
  std::unique_ptr<CommRequest> gather =
      comm->all_gather_async(i32.data(), i32.data() + 32 * size, 3, DType::kI32);  // 3 * size * 4
  std::unique_ptr<CommRequest> scatter = comm->reduce_scatter_async(
      f.data() + 16, f.data() + 32 * size, 5, DType::kF32, ReduceOp::kMax);  // 5 * size * 4
  const CommStats& stats = comm->stats();
  auto calls = [&](CommOp op) { return stats.calls[static_cast<int>(op)]; };
  auto bytes = [&](CommOp op) { return stats.bytes[static_cast<int>(op)]; };
  EXPECT_EQ(calls(CommOp::kAllReduce), 1u);
  EXPECT_EQ(bytes(CommOp::kAllReduce), 40u);
  EXPECT_EQ(calls(CommOp::kAllGather), 1u);
  EXPECT_EQ(bytes(CommOp::kAllGather), 12u * size);
  EXPECT_EQ(calls(CommOp::kReduceScatter), 1u);
  EXPECT_EQ(bytes(CommOp::kReduceScatter), 20u * size);
  scatter->wait();
  gather->wait();
  reduce->wait();
  EXPECT_EQ(stats.total_bytes(), 40u + 12u * size + 20u * size) << "waiting counted again";
}

TEST(MpiCommunicator, AsyncArgumentErrorsThrowWhenPosted) {
  Communicator& world = mpi_world();
  std::vector<float> buffer(8, 0.0f);
  EXPECT_THROW(world.reduce_scatter_async(nullptr, buffer.data(), 1, DType::kF32, ReduceOp::kSum),
               Error);
  EXPECT_THROW(world.all_gather_async(buffer.data(), nullptr, 1, DType::kF32), Error);
  world.all_reduce_async(nullptr, nullptr, 0, DType::kF32, ReduceOp::kSum)->wait();
  world.barrier();  // still usable
}

TEST(MpiCommunicator, OperationNames) {
  EXPECT_STREQ(comm_op_name(CommOp::kAllReduce), "all_reduce");
  EXPECT_STREQ(comm_op_name(CommOp::kAllGather), "all_gather");
  EXPECT_STREQ(comm_op_name(CommOp::kReduceScatter), "reduce_scatter");
  EXPECT_STREQ(comm_op_name(CommOp::kBroadcast), "broadcast");
  EXPECT_STREQ(comm_op_name(CommOp::kSend), "send");
  EXPECT_STREQ(comm_op_name(CommOp::kRecv), "recv");
  EXPECT_STREQ(comm_op_name(CommOp::kBarrier), "barrier");
}

// Every rank makes the same mistakes, which are caught before anything is sent, so the world
// stays usable.
TEST(MpiCommunicator, ArgumentErrorsThrow) {
  Communicator& world = mpi_world();
  const int size = world.size();
  std::vector<float> buffer(8, 0.0f);
  EXPECT_THROW(world.broadcast(buffer.data(), 8, DType::kF32, -1), Error);
  EXPECT_THROW(world.broadcast(buffer.data(), 8, DType::kF32, size), Error);
  EXPECT_THROW(world.send(buffer.data(), 8, DType::kF32, size, 0), Error);
  EXPECT_THROW(world.recv(buffer.data(), 8, DType::kF32, -1, 0), Error);
  EXPECT_THROW(world.send(buffer.data(), 8, DType::kF32, 0, -3), Error);
  const P2POp bad_peer[] = {{P2POp::Kind::kRecv, buffer.data(), 8, DType::kF32, size, 0}};
  EXPECT_THROW(world.send_recv_batch(bad_peer), Error);
  EXPECT_THROW(world.world_rank_of(size), Error);
  EXPECT_THROW(world.all_reduce(nullptr, buffer.data(), 8, DType::kF32, ReduceOp::kSum), Error);
  EXPECT_THROW(world.split(-1, 0, "negative"), Error);
  world.barrier();  // still usable
}

// bf16 is reduced in f32 with one rounding per step (as NCCL does): values that are exact in bf16
// and whose partial sums stay exact give the exact sum and max, in place and not, blocking and
// posted.
TEST(MpiCommunicator, ReducesBf16) {
  Communicator& world = mpi_world();
  const int size = world.size(), rank = world.rank();
  constexpr size_t n = 5;
  std::vector<bf16> mine(n * static_cast<size_t>(size)), sum(mine.size()), max(mine.size());
  for (size_t i = 0; i < mine.size(); ++i) mine[i] = float_to_bf16(static_cast<float>(rank + 1) * (i % 2 ? -0.5f : 2.0f));
  world.all_reduce(mine.data(), sum.data(), mine.size(), DType::kBF16, ReduceOp::kSum);
  std::vector<bf16> in_place = mine;
  world.all_reduce_async(in_place.data(), in_place.data(), mine.size(), DType::kBF16, ReduceOp::kMax)->wait();
  const float ranks_sum = static_cast<float>(size * (size + 1) / 2);
  for (size_t i = 0; i < mine.size(); ++i) {
    EXPECT_EQ(bf16_to_float(sum[i]), ranks_sum * (i % 2 ? -0.5f : 2.0f)) << "sum element " << i;
    EXPECT_EQ(bf16_to_float(in_place[i]), i % 2 ? -0.5f : 2.0f * static_cast<float>(size)) << "max element " << i;
  }
  std::vector<bf16> block(n);
  world.reduce_scatter(mine.data(), block.data(), n, DType::kBF16, ReduceOp::kSum);
  for (size_t i = 0; i < n; ++i) {
    EXPECT_EQ(bf16_to_float(block[i]), bf16_to_float(sum[static_cast<size_t>(rank) * n + i])) << "block element " << i;
  }
}

// A message of the wrong length is an error on the receiving side: too long is MPI's truncation
// error, too short is Loom's check.
TEST(MpiCommunicator, RecvOfAMessageOfTheWrongLengthThrows) {
  Communicator& world = mpi_world();
  if (world.size() == 1) GTEST_SKIP() << "needs a peer";
  std::unique_ptr<Communicator> pair = world.split(world.rank() < 2 ? 0 : 1, world.rank(), "pair");
  if (world.rank() < 2) {
    std::vector<float> buffer(8, 1.0f);
    if (world.rank() == 0) {
      pair->send(buffer.data(), 8, DType::kF32, 1, 11);
      pair->send(buffer.data(), 4, DType::kF32, 1, 12);
    } else {
      try {
        pair->recv(buffer.data(), 4, DType::kF32, 0, 11);
        ADD_FAILURE() << "receiving 8 elements into 4 did not throw";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("MPI_ERR_TRUNCATE"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("world rank 1"), std::string::npos) << e.what();
      }
      try {
        pair->recv(buffer.data(), 8, DType::kF32, 0, 12);
        ADD_FAILURE() << "receiving 4 elements where 8 were expected did not throw";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("expected 8 elements"), std::string::npos) << e.what();
      }
    }
  }
  world.barrier();
}

// The message names the operation, the group and, among the ranks that never arrived, the late
// one (a rank descheduled for the whole timeout on a loaded machine could be named too).
void expect_timeout_message(const Error& error, const std::string& op, const std::string& group,
                            int late_world_rank, Clock::duration waited) {
  const std::string message = error.what();
  EXPECT_NE(message.find(op + " on group '" + group + "'"), std::string::npos) << message;
  const std::string lead = "world rank(s) ";
  const size_t first = message.find(lead);
  const size_t last = message.find(" never arrived");
  ASSERT_TRUE(first != std::string::npos && last != std::string::npos && first < last) << message;
  const std::string listed =
      ", " + message.substr(first + lead.size(), last - first - lead.size()) + ",";
  EXPECT_NE(listed.find(", " + std::to_string(late_world_rank) + ","), std::string::npos)
      << message;
  EXPECT_GE(waited, milliseconds(300)) << message;
  EXPECT_LT(waited, milliseconds(2000)) << message;
}

// The highest rank skips an all_reduce: the others give up after the timeout and name it. Then it
// catches up, completing the operation the others abandoned, so nothing is left pending.
TEST(MpiCommunicator, TimeoutNamesTheRankThatNeverArrivedAtACollective) {
  Communicator& world = mpi_world();
  if (world.size() == 1) GTEST_SKIP() << "with one rank no peer can be missing";
  const int late = world.size() - 1;
  // Declared before the group: the abandoned all_reduce may write it until the group is gone.
  std::vector<float> buffer(16, 1.0f);
  {
    std::unique_ptr<Communicator> group = world.split(0, world.rank(), "latecomers");
    group->set_timeout(milliseconds(300));
    if (world.rank() != late) {
      const Clock::time_point start = Clock::now();
      try {
        group->all_reduce(buffer.data(), buffer.data(), buffer.size(), DType::kF32, ReduceOp::kSum);
        ADD_FAILURE() << "all_reduce without the late rank did not time out";
      } catch (const Error& e) {
        expect_timeout_message(e, "all_reduce", "latecomers", late, Clock::now() - start);
      }
      EXPECT_THROW(group->barrier(), Error) << "a timed-out communicator must stay unusable";
      world.barrier();  // the others have given up
      world.barrier();  // the late rank has caught up
    } else {
      world.barrier();
      group->all_reduce(buffer.data(), buffer.data(), buffer.size(), DType::kF32, ReduceOp::kSum);
      EXPECT_EQ(buffer[0], static_cast<float>(world.size()));
      world.barrier();
    }
  }
  world.barrier();
}

// The highest rank posts two async all_reduces late: the others' wait for the second (waited
// first) gives up at the deadline counted from the post and names it; the first is then given up
// at once. When the late rank catches up, both complete everywhere.
TEST(MpiCommunicator, AsyncTimeoutNamesTheRankThatNeverPosted) {
  Communicator& world = mpi_world();
  if (world.size() == 1) GTEST_SKIP() << "with one rank no peer can be missing";
  const int late = world.size() - 1;
  // Declared before the group: the abandoned all_reduces may write them until the group is gone.
  std::vector<float> first(16, 1.0f);
  std::vector<float> second(16, 2.0f);
  {
    std::unique_ptr<Communicator> group = world.split(0, world.rank(), "async_latecomers");
    group->set_timeout(milliseconds(300));
    if (world.rank() != late) {
      const Clock::time_point posted = Clock::now();
      std::unique_ptr<CommRequest> a =
          group->all_reduce_async(first.data(), first.data(), 16, DType::kF32, ReduceOp::kSum);
      std::unique_ptr<CommRequest> b =
          group->all_reduce_async(second.data(), second.data(), 16, DType::kF32, ReduceOp::kSum);
      EXPECT_FALSE(b->test()) << "completed without the late rank";
      std::this_thread::sleep_for(milliseconds(150));  // part of the deadline passes before wait
      try {
        b->wait();
        ADD_FAILURE() << "wait for an all_reduce without the late rank did not time out";
      } catch (const Error& e) {
        expect_timeout_message(e, "all_reduce", "async_latecomers", late, Clock::now() - posted);
        EXPECT_NE(std::string(e.what()).find("at collective #"), std::string::npos) << e.what();
      }
      const Clock::time_point second_wait = Clock::now();
      try {
        a->wait();
        ADD_FAILURE() << "the other request in flight did not fail after the timeout";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("unusable after an earlier timeout"),
                  std::string::npos)
            << e.what();
      }
      EXPECT_LT(Clock::now() - second_wait, milliseconds(100)) << "gave up without waiting again";
      EXPECT_THROW(b->wait(), Error) << "a timed-out request must keep failing";
      EXPECT_THROW(group->all_reduce_async(first.data(), first.data(), 16, DType::kF32,
                                           ReduceOp::kSum),
                   Error)
          << "a timed-out communicator must stay unusable";
      world.barrier();  // the others have given up
      world.barrier();  // the late rank has caught up
    } else {
      world.barrier();
      std::unique_ptr<CommRequest> a =
          group->all_reduce_async(first.data(), first.data(), 16, DType::kF32, ReduceOp::kSum);
      std::unique_ptr<CommRequest> b =
          group->all_reduce_async(second.data(), second.data(), 16, DType::kF32, ReduceOp::kSum);
      b->wait();
      a->wait();
      EXPECT_EQ(first[0], static_cast<float>(world.size()));
      EXPECT_EQ(second[0], static_cast<float>(2 * world.size()));
      world.barrier();
    }
  }
  world.barrier();
}

// Rank 0 waits for a message (and a batch) the highest rank never sends.
TEST(MpiCommunicator, TimeoutNamesThePeerThatNeverSent) {
  Communicator& world = mpi_world();
  if (world.size() == 1) GTEST_SKIP() << "with one rank no peer can be missing";
  const int late = world.size() - 1;
  std::vector<float> buffer(8, 0.0f);
  std::unique_ptr<Communicator> pipeline = world.split(0, world.rank(), "pipeline");
  std::unique_ptr<Communicator> stage = world.split(0, world.rank(), "stage");
  pipeline->set_timeout(milliseconds(300));
  stage->set_timeout(milliseconds(300));
  if (world.rank() == 0) {
    Clock::time_point start = Clock::now();
    try {
      pipeline->recv(buffer.data(), buffer.size(), DType::kF32, late, 7);
      ADD_FAILURE() << "recv from a peer that never sends did not time out";
    } catch (const Error& e) {
      expect_timeout_message(e, "recv", "pipeline", late, Clock::now() - start);
    }
    start = Clock::now();
    const P2POp ops[] = {{P2POp::Kind::kRecv, buffer.data(), buffer.size(), DType::kF32, late, 3}};
    try {
      stage->send_recv_batch(ops);
      ADD_FAILURE() << "send_recv_batch from a peer that never sends did not time out";
    } catch (const Error& e) {
      expect_timeout_message(e, "send_recv_batch", "stage", late, Clock::now() - start);
    }
  }
  // The same for a batch posted asynchronously: its wait() times out. (A fresh group: a timeout
  // leaves a communicator unusable.)
  std::unique_ptr<Communicator> async_stage = world.split(0, world.rank(), "async_stage");
  async_stage->set_timeout(milliseconds(300));
  if (world.rank() == 0) {
    const Clock::time_point start = Clock::now();
    const P2POp ops[] = {{P2POp::Kind::kRecv, buffer.data(), buffer.size(), DType::kF32, late, 3}};
    std::unique_ptr<CommRequest> request = async_stage->send_recv_batch_async(ops);
    EXPECT_FALSE(request->test());
    try {
      request->wait();
      ADD_FAILURE() << "an asynchronous recv from a peer that never sends did not time out";
    } catch (const Error& e) {
      expect_timeout_message(e, "send_recv_batch_async", "async_stage", late, Clock::now() - start);
    }
    EXPECT_THROW(async_stage->barrier(), Error);  // unusable after the timeout
  }
  world.barrier();
}

}  // namespace
}  // namespace loom::parallel
