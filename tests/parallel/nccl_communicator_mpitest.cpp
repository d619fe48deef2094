// NcclCommunicator on real ranks and a GPU: every operation on device buffers against the values
// computed on the host from (seed, rank), in place and out of place; the asynchronous collectives
// in flight together; split; the traffic counters; stream order (calls return while the stream is
// held back, the asynchronous ones read what the compute stream wrote before them, the host reads
// after synchronize()); and an operation that never completes, or a peer that never arrives,
// turning into a CommTimeout from the watchdog, named, instead of a hang, with the caller never
// blocked inside the call.
//
// Every result is read on the host after synchronize(), as the communicator's contract asks.

// The inputs are small integers, so sums over ranks are exact in f32 and bf16 whatever order
// NCCL adds them in, and the comparisons ask for equality. Skipped without a CUDA device, and
// where the ranks outnumber the devices and NCCL refuses to put two ranks on one GPU.
#ifdef LOOM_HAS_CUDA

#include "parallel/nccl_communicator.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/base/check.h"
#include "mpi_test_util.h"
#include "test_util.h"

namespace loom::parallel {
namespace {

constexpr std::chrono::milliseconds kTestTimeout{60'000};

// Decided over the MPI world, so that every rank takes the same branch: a rank that skipped alone
// would leave the others waiting in a collective.
bool any_rank(Communicator& world, bool local) {
  int32_t flag = local ? 1 : 0;
  world.all_reduce(&flag, &flag, 1, DType::kI32, ReduceOp::kMax);
  return flag != 0;
}

void cuda_check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw Error(std::string(what) + " failed: " + cudaGetErrorString(status));
  }
}

// Element i of rank `rank`'s input for `seed`: an integer in [-8, 8].
float value_at(int seed, int rank, size_t i) {
  const size_t mixed = static_cast<size_t>(seed) * 131 + static_cast<size_t>(rank) * 31 + i * 7;
  return static_cast<float>(static_cast<int>(mixed % 17) - 8);
}

std::vector<float> rank_values(int seed, int rank, size_t n) {
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = value_at(seed, rank, i);
  return out;
}

std::vector<float> sum_over_ranks(int seed, int size, size_t n) {
  std::vector<float> out(n, 0.0f);
  for (int r = 0; r < size; ++r) {
    for (size_t i = 0; i < n; ++i) out[i] += value_at(seed, r, i);
  }
  return out;
}

std::vector<bf16> to_bf16(const std::vector<float>& values) {
  std::vector<bf16> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = float_to_bf16(values[i]);
  return out;
}

std::vector<float> to_float(const std::vector<bf16>& values) {
  std::vector<float> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = bf16_to_float(values[i]);
  return out;
}

// Device memory with synchronous copies. They run on the legacy default stream, which waits for the
// work queued on the test's (blocking) compute stream and holds back the work queued after them,
// so they never race the communicator's operations on it: they wait for them instead.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    cuda_check(cudaMalloc(&data_, std::max<size_t>(bytes, 1)), "cudaMalloc");
  }
  ~DeviceBuffer() { cudaFree(data_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  // The address `byte_offset` bytes in, for in-place gathers and scatters.
  void* at(size_t byte_offset) const {
    LOOM_CHECK(byte_offset <= bytes_, "offset", byte_offset, "past a buffer of", bytes_, "bytes");
    return static_cast<char*>(data_) + byte_offset;
  }

  template <typename T>
  void upload(const std::vector<T>& host, size_t byte_offset = 0) {
    LOOM_CHECK(byte_offset + host.size() * sizeof(T) <= bytes_, "upload of",
               host.size() * sizeof(T), "bytes at", byte_offset, "past a buffer of", bytes_);
    cuda_check(
        cudaMemcpy(at(byte_offset), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
        "cudaMemcpy to device");
  }

  template <typename T>
  std::vector<T> download(size_t n) const {
    LOOM_CHECK(n * sizeof(T) <= bytes_, "download of", n * sizeof(T), "bytes from a buffer of",
               bytes_);
    std::vector<T> host(n);
    cuda_check(cudaMemcpy(host.data(), data_, n * sizeof(T), cudaMemcpyDeviceToHost),
               "cudaMemcpy to host");
    return host;
  }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

class NcclCommunicatorMpiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Communicator& world = testing::mpi_world();
    int devices = 0;
    const cudaError_t status = cudaGetDeviceCount(&devices);
    if (any_rank(world, status != cudaSuccess || devices == 0)) {
      GTEST_SKIP() << "no CUDA device"
                   << (status != cudaSuccess ? std::string(" (cudaGetDeviceCount: ") +
                                                   cudaGetErrorString(status) + ")"
                                             : std::string());
    }
    // One GPU per rank where there are enough; otherwise ranks share (which NCCL may refuse).
    device_ = world.rank() % devices;
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    cuda_check(cudaStreamCreate(&stream_), "cudaStreamCreate");

    // The communicator inherits the bootstrap's timeout: a broken run fails in a minute.
    const std::chrono::milliseconds saved = world.timeout();
    world.set_timeout(kTestTimeout);
    std::string error;
    try {
      comm_ = NcclCommunicator::create(world, device_, stream_, "world");
    } catch (const Error& e) {
      error = e.what();
    }
    world.set_timeout(saved);
    if (any_rank(world, !error.empty())) {
      comm_.reset();
      if (world.size() > devices) {
        GTEST_SKIP() << world.size() << " ranks on " << devices
                     << " CUDA device(s): NCCL refused several ranks on one GPU ("
                     << (error.empty() ? "on another rank" : error) << ")";
      }
      FAIL() << "NcclCommunicator::create failed: "
             << (error.empty() ? "on another rank (see its message)" : error);
    }
  }

  void TearDown() override {
    comm_.reset();
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  // `buffer` on the host, once every operation posted so far has completed.
  template <typename T>
  std::vector<T> read(const DeviceBuffer& buffer, size_t n) {
    comm_->synchronize();
    return buffer.download<T>(n);
  }

  int device_ = 0;
  cudaStream_t stream_ = nullptr;  // blocking (cudaStreamCreate): see DeviceBuffer
  std::unique_ptr<NcclCommunicator> comm_;
};

// Holds a stream back with a host function until release() (or destruction): the work queued
// after it waits, as if the kernels before it were slow or a peer's data had not come.
class StreamGate {
 public:
  explicit StreamGate(cudaStream_t stream) : state_(std::make_shared<State>()) {
    // The host function keeps the state alive: it may still be leaving hold() after ~StreamGate.
    auto* held = new std::shared_ptr<State>(state_);
    const cudaError_t status = cudaLaunchHostFunc(stream, &StreamGate::hold, held);
    if (status != cudaSuccess) delete held;
    cuda_check(status, "cudaLaunchHostFunc");
  }
  ~StreamGate() { release(); }
  StreamGate(const StreamGate&) = delete;
  StreamGate& operator=(const StreamGate&) = delete;

  void release() {
    {
      std::lock_guard<std::mutex> lock(state_->mutex);
      state_->open = true;
    }
    state_->opened.notify_all();
  }

 private:
  struct State {
    std::mutex mutex;
    std::condition_variable opened;
    bool open = false;
  };

  static void hold(void* held) {
    const std::unique_ptr<std::shared_ptr<State>> state(static_cast<std::shared_ptr<State>*>(held));
    State& gate = **state;
    std::unique_lock<std::mutex> lock(gate.mutex);
    gate.opened.wait(lock, [&gate] { return gate.open; });
  }

  std::shared_ptr<State> state_;
};

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

using Clock = std::chrono::steady_clock;

TEST_F(NcclCommunicatorMpiTest, TakesItsShapeFromTheBootstrap) {
  Communicator& world = testing::mpi_world();
  EXPECT_TRUE(comm_->stream_ordered());
  EXPECT_EQ(comm_->stream(), stream_);
  EXPECT_NE(comm_->communication_stream(), stream_);
  EXPECT_EQ(comm_->rank(), world.rank());
  EXPECT_EQ(comm_->size(), world.size());
  EXPECT_EQ(comm_->name(), "world");
  EXPECT_EQ(comm_->timeout(), kTestTimeout);
  EXPECT_EQ(comm_->device(), device_);
  for (int r = 0; r < comm_->size(); ++r) {
    EXPECT_EQ(comm_->world_rank_of(r), world.world_rank_of(r));
  }
  EXPECT_THROW(comm_->world_rank_of(comm_->size()), Error);
}

TEST_F(NcclCommunicatorMpiTest, AllReduceSumsF32OutOfPlaceAndInPlace) {
  const size_t n = 1031;
  DeviceBuffer send(n * sizeof(float)), recv(n * sizeof(float));
  send.upload(rank_values(1, comm_->rank(), n));
  recv.upload(testing::poisoned(n));
  const std::vector<float> expected = sum_over_ranks(1, comm_->size(), n);

  comm_->all_reduce(send.data(), recv.data(), n, DType::kF32, ReduceOp::kSum);
  EXPECT_TRUE(testing::all_close(read<float>(recv, n), expected, 0, 0)) << "out of place";
  EXPECT_TRUE(testing::all_close(read<float>(send, n), rank_values(1, comm_->rank(), n), 0, 0))
      << "the send buffer changed";

  comm_->all_reduce(send.data(), send.data(), n, DType::kF32, ReduceOp::kSum);
  EXPECT_TRUE(testing::all_close(read<float>(send, n), expected, 0, 0)) << "in place";
}

TEST_F(NcclCommunicatorMpiTest, AllReduceSumsBf16) {
  const size_t n = 517;
  DeviceBuffer buffer(n * sizeof(bf16));
  buffer.upload(to_bf16(rank_values(2, comm_->rank(), n)));
  comm_->all_reduce(buffer.data(), buffer.data(), n, DType::kBF16, ReduceOp::kSum);
  EXPECT_TRUE(testing::all_close(to_float(read<bf16>(buffer, n)),
                                 sum_over_ranks(2, comm_->size(), n), 0, 0));
}

TEST_F(NcclCommunicatorMpiTest, AllReduceTakesTheMaxOfI32) {
  const size_t n = 300;
  auto input = [](int rank, size_t count) {
    std::vector<int32_t> out(count);
    for (size_t i = 0; i < count; ++i) {
      out[i] = static_cast<int32_t>(value_at(3, rank, i)) * 1000 + rank;
    }
    return out;
  };
  DeviceBuffer send(n * sizeof(int32_t)), recv(n * sizeof(int32_t));
  send.upload(input(comm_->rank(), n));
  comm_->all_reduce(send.data(), recv.data(), n, DType::kI32, ReduceOp::kMax);
  std::vector<int32_t> expected = input(0, n);
  for (int r = 1; r < comm_->size(); ++r) {
    const std::vector<int32_t> other = input(r, n);
    for (size_t i = 0; i < n; ++i) expected[i] = std::max(expected[i], other[i]);
  }
  EXPECT_TRUE(testing::all_close(read<int32_t>(recv, n), expected, 0, 0));
}

TEST_F(NcclCommunicatorMpiTest, AllGatherConcatenatesInRankOrder) {
  const size_t n = 129;  // per rank
  const size_t size = static_cast<size_t>(comm_->size());
  const size_t rank = static_cast<size_t>(comm_->rank());
  std::vector<float> expected;
  for (int r = 0; r < comm_->size(); ++r) {
    const std::vector<float> block = rank_values(4, r, n);
    expected.insert(expected.end(), block.begin(), block.end());
  }

  DeviceBuffer send(n * sizeof(float)), recv(size * n * sizeof(float));
  send.upload(rank_values(4, comm_->rank(), n));
  recv.upload(testing::poisoned(size * n));
  comm_->all_gather(send.data(), recv.data(), n, DType::kF32);
  EXPECT_TRUE(testing::all_close(read<float>(recv, size * n), expected, 0, 0)) << "out of place";

  // In place: this rank's block already sits at its offset of the output.
  DeviceBuffer inplace(size * n * sizeof(float));
  inplace.upload(testing::poisoned(size * n));
  inplace.upload(rank_values(4, comm_->rank(), n), rank * n * sizeof(float));
  comm_->all_gather(inplace.at(rank * n * sizeof(float)), inplace.data(), n, DType::kF32);
  EXPECT_TRUE(testing::all_close(read<float>(inplace, size * n), expected, 0, 0)) << "in place";
}

TEST_F(NcclCommunicatorMpiTest, ReduceScatterSumsThisRanksBlock) {
  const size_t n = 211;  // per rank
  const size_t size = static_cast<size_t>(comm_->size());
  const size_t rank = static_cast<size_t>(comm_->rank());
  const std::vector<float> sum = sum_over_ranks(5, comm_->size(), size * n);
  const std::vector<float> expected(sum.begin() + static_cast<std::ptrdiff_t>(rank * n),
                                    sum.begin() + static_cast<std::ptrdiff_t>((rank + 1) * n));

  DeviceBuffer send(size * n * sizeof(float)), recv(n * sizeof(float));
  send.upload(rank_values(5, comm_->rank(), size * n));
  recv.upload(testing::poisoned(n));
  comm_->reduce_scatter(send.data(), recv.data(), n, DType::kF32, ReduceOp::kSum);
  EXPECT_TRUE(testing::all_close(read<float>(recv, n), expected, 0, 0)) << "out of place";

  // In place: the result lands in this rank's block of the input.
  comm_->reduce_scatter(send.data(), send.at(rank * n * sizeof(float)), n, DType::kF32,
                        ReduceOp::kSum);
  const std::vector<float> whole = read<float>(send, size * n);
  const std::vector<float> block(whole.begin() + static_cast<std::ptrdiff_t>(rank * n),
                                 whole.begin() + static_cast<std::ptrdiff_t>((rank + 1) * n));
  EXPECT_TRUE(testing::all_close(block, expected, 0, 0)) << "in place";
}

TEST_F(NcclCommunicatorMpiTest, BroadcastCopiesTheRootsBufferFromEveryRoot) {
  const size_t n = 77;
  DeviceBuffer buffer(n * sizeof(float));
  for (int root = 0; root < comm_->size(); ++root) {
    buffer.upload(rank_values(6 + root, comm_->rank(), n));
    comm_->broadcast(buffer.data(), n, DType::kF32, root);
    EXPECT_TRUE(testing::all_close(read<float>(buffer, n), rank_values(6 + root, root, n), 0, 0))
        << "root " << root;
  }
  EXPECT_THROW(comm_->broadcast(buffer.data(), n, DType::kF32, comm_->size()), Error);
}

TEST_F(NcclCommunicatorMpiTest, BatchedSendRecvPassesAroundARing) {
  const size_t n = 96;
  const int next = (comm_->rank() + 1) % comm_->size();
  const int previous = (comm_->rank() + comm_->size() - 1) % comm_->size();
  DeviceBuffer send(n * sizeof(float)), recv(n * sizeof(float));
  send.upload(rank_values(20, comm_->rank(), n));
  recv.upload(testing::poisoned(n));
  // Every rank sends before it receives: only a batch (one NCCL group) cannot deadlock here.
  const P2POp ops[] = {{P2POp::Kind::kSend, send.data(), n, DType::kF32, next, 0},
                       {P2POp::Kind::kRecv, recv.data(), n, DType::kF32, previous, 0}};
  comm_->send_recv_batch(ops);
  EXPECT_TRUE(testing::all_close(read<float>(recv, n), rank_values(20, previous, n), 0, 0));
}

TEST_F(NcclCommunicatorMpiTest, SendAndRecvPairNeighbours) {
  if (comm_->size() < 2) GTEST_SKIP() << "needs 2 ranks";
  const size_t n = 64;
  const int rank = comm_->rank();
  // Ranks (0, 1), (2, 3), ... exchange in opposite orders; an odd last rank sits out.
  const bool lower = rank % 2 == 0;
  const int peer = lower ? rank + 1 : rank - 1;
  if (peer >= comm_->size()) return;
  DeviceBuffer send(n * sizeof(float)), recv(n * sizeof(float));
  send.upload(rank_values(30, rank, n));
  recv.upload(testing::poisoned(n));
  if (lower) {
    comm_->send(send.data(), n, DType::kF32, peer, 7);
    comm_->recv(recv.data(), n, DType::kF32, peer, 8);
  } else {
    comm_->recv(recv.data(), n, DType::kF32, peer, 7);
    comm_->send(send.data(), n, DType::kF32, peer, 8);
  }
  EXPECT_TRUE(testing::all_close(read<float>(recv, n), rank_values(30, peer, n), 0, 0));
}

TEST_F(NcclCommunicatorMpiTest, StatsCountTheBytesThisRankContributes) {
  const uint64_t size = static_cast<uint64_t>(comm_->size());
  DeviceBuffer buffer(4096);
  DeviceBuffer other(4096);
  comm_->stats().reset();

  comm_->all_reduce(buffer.data(), buffer.data(), 10, DType::kF32, ReduceOp::kSum);
  comm_->all_gather(buffer.data(), other.data(), 3, DType::kBF16);
  comm_->reduce_scatter(buffer.data(), other.data(), 5, DType::kI32, ReduceOp::kSum);
  comm_->broadcast(buffer.data(), 7, DType::kF32, 0);
  const int next = (comm_->rank() + 1) % comm_->size();
  const int previous = (comm_->rank() + comm_->size() - 1) % comm_->size();
  const P2POp ops[] = {{P2POp::Kind::kSend, buffer.data(), 4, DType::kF32, next, 0},
                       {P2POp::Kind::kRecv, other.data(), 4, DType::kF32, previous, 0}};
  comm_->send_recv_batch(ops);
  comm_->barrier();

  const CommStats& stats = comm_->stats();
  auto calls = [&](CommOp op) { return stats.calls[static_cast<int>(op)]; };
  auto bytes = [&](CommOp op) { return stats.bytes[static_cast<int>(op)]; };
  for (int op = 0; op < static_cast<int>(CommOp::kCount); ++op) {
    EXPECT_EQ(stats.calls[op], 1u) << comm_op_name(static_cast<CommOp>(op));
  }
  EXPECT_EQ(bytes(CommOp::kAllReduce), 10u * 4);
  EXPECT_EQ(bytes(CommOp::kAllGather), 3u * size * 2);
  EXPECT_EQ(bytes(CommOp::kReduceScatter), 5u * size * 4);
  EXPECT_EQ(bytes(CommOp::kBroadcast), 7u * 4);
  EXPECT_EQ(bytes(CommOp::kSend), 4u * 4);
  EXPECT_EQ(bytes(CommOp::kRecv), 4u * 4);
  EXPECT_EQ(bytes(CommOp::kBarrier), 0u);
  EXPECT_EQ(calls(CommOp::kBarrier), 1u);
  EXPECT_EQ(stats.total_bytes(), 40 + 6 * size + 20 * size + 28 + 16 + 16);
}

TEST_F(NcclCommunicatorMpiTest, SplitGroupsByColorAndOrdersByKey) {
  const int rank = comm_->rank();
  const int size = comm_->size();
  // Two groups by parity, each ordered backwards (key = -rank).
  std::unique_ptr<Communicator> group = comm_->split(rank % 2, -rank, "parity");
  std::vector<int> members;  // world ranks in the new group's order
  for (int r = size - 1; r >= 0; --r) {
    if (r % 2 == rank % 2) members.push_back(comm_->world_rank_of(r));
  }
  ASSERT_EQ(group->size(), static_cast<int>(members.size()));
  EXPECT_EQ(group->name(), "parity");
  EXPECT_EQ(group->timeout(), comm_->timeout());
  for (int r = 0; r < group->size(); ++r) {
    EXPECT_EQ(group->world_rank_of(r), members[static_cast<size_t>(r)]) << "group rank " << r;
  }
  EXPECT_EQ(group->world_rank_of(group->rank()), comm_->world_rank_of(rank));

  const size_t n = 50;
  DeviceBuffer buffer(n * sizeof(float));
  buffer.upload(rank_values(40, rank, n));
  group->all_reduce(buffer.data(), buffer.data(), n, DType::kF32, ReduceOp::kSum);
  std::vector<float> expected(n, 0.0f);
  for (int r = rank % 2; r < size; r += 2) {
    for (size_t i = 0; i < n; ++i) expected[i] += value_at(40, r, i);
  }
  group->synchronize();
  EXPECT_TRUE(testing::all_close(read<float>(buffer, n), expected, 0, 0));
  EXPECT_EQ(group->stats().calls[static_cast<int>(CommOp::kAllReduce)], 1u);
}

// Four operations in flight at once, waited for in reverse order of posting.
TEST_F(NcclCommunicatorMpiTest, AsyncCollectivesInFlightTogetherCompleteInAnyWaitOrder) {
  const size_t n = 257;  // per rank
  const size_t size = static_cast<size_t>(comm_->size());
  const size_t rank = static_cast<size_t>(comm_->rank());
  const uint64_t bytes_before = comm_->stats().total_bytes();

  DeviceBuffer scatter_send(size * n * sizeof(float)), scatter_recv(n * sizeof(float));
  scatter_send.upload(rank_values(50, comm_->rank(), size * n));
  scatter_recv.upload(testing::poisoned(n));
  DeviceBuffer sum(n * sizeof(float));
  sum.upload(rank_values(51, comm_->rank(), n));
  DeviceBuffer half_sum(n * sizeof(bf16));
  half_sum.upload(to_bf16(rank_values(52, comm_->rank(), n)));
  DeviceBuffer gathered(size * n * sizeof(float));
  gathered.upload(testing::poisoned(size * n));
  gathered.upload(rank_values(53, comm_->rank(), n), rank * n * sizeof(float));

  std::vector<std::unique_ptr<CommRequest>> requests;
  requests.push_back(comm_->reduce_scatter_async(scatter_send.data(), scatter_recv.data(), n,
                                                 DType::kF32, ReduceOp::kSum));
  requests.push_back(
      comm_->all_reduce_async(sum.data(), sum.data(), n, DType::kF32, ReduceOp::kSum));
  requests.push_back(
      comm_->all_reduce_async(half_sum.data(), half_sum.data(), n, DType::kBF16, ReduceOp::kSum));
  requests.push_back(comm_->all_gather_async(gathered.at(rank * n * sizeof(float)),
                                             gathered.data(), n, DType::kF32));
  EXPECT_EQ(comm_->stats().total_bytes() - bytes_before,
            size * n * 4 + n * 4 + n * 2 + size * n * 4)
      << "counted when posted";
  for (auto request = requests.rbegin(); request != requests.rend(); ++request) {
    (*request)->wait();
  }
  for (const std::unique_ptr<CommRequest>& request : requests) EXPECT_TRUE(request->test());

  const std::vector<float> scatter_sum = sum_over_ranks(50, comm_->size(), size * n);
  const std::vector<float> scatter_expected(
      scatter_sum.begin() + static_cast<std::ptrdiff_t>(rank * n),
      scatter_sum.begin() + static_cast<std::ptrdiff_t>((rank + 1) * n));
  EXPECT_TRUE(testing::all_close(read<float>(scatter_recv, n), scatter_expected, 0, 0))
      << "reduce_scatter";
  EXPECT_TRUE(
      testing::all_close(read<float>(sum, n), sum_over_ranks(51, comm_->size(), n), 0, 0))
      << "all_reduce f32";
  EXPECT_TRUE(testing::all_close(to_float(read<bf16>(half_sum, n)),
                                 sum_over_ranks(52, comm_->size(), n), 0, 0))
      << "all_reduce bf16";
  std::vector<float> gather_expected;
  for (int r = 0; r < comm_->size(); ++r) {
    const std::vector<float> block = rank_values(53, r, n);
    gather_expected.insert(gather_expected.end(), block.begin(), block.end());
  }
  EXPECT_TRUE(
      testing::all_close(read<float>(gathered, size * n), gather_expected, 0, 0))
      << "all_gather in place";
}

// test() becomes true without a wait; a blocking call behind a request in flight completes; a
// request destroyed unwaited still orders the compute stream after its operation.
TEST_F(NcclCommunicatorMpiTest, AsyncTestBlockingCallsInBetweenAndDestroyingUnwaited) {
  const size_t n = 1000;
  DeviceBuffer first(n * sizeof(float)), second(n * sizeof(float)), third(n * sizeof(float));
  first.upload(rank_values(60, comm_->rank(), n));
  second.upload(rank_values(61, comm_->rank(), n));
  third.upload(rank_values(62, comm_->rank(), n));

  std::unique_ptr<CommRequest> request =
      comm_->all_reduce_async(first.data(), first.data(), n, DType::kF32, ReduceOp::kSum);
  comm_->all_reduce(second.data(), second.data(), n, DType::kF32, ReduceOp::kSum);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!request->test()) {
    ASSERT_LT(std::chrono::steady_clock::now(), give_up) << "test() never became true";
  }
  request->wait();

  request = comm_->all_reduce_async(third.data(), third.data(), n, DType::kF32, ReduceOp::kSum);
  request.reset();
  EXPECT_TRUE(
      testing::all_close(read<float>(first, n), sum_over_ranks(60, comm_->size(), n), 0, 0));
  EXPECT_TRUE(
      testing::all_close(read<float>(second, n), sum_over_ranks(61, comm_->size(), n), 0, 0));
  EXPECT_TRUE(
      testing::all_close(read<float>(third, n), sum_over_ranks(62, comm_->size(), n), 0, 0));
}

// Calls return while the compute stream is held back (no host wait per operation); their results
// are there once the stream runs and synchronize() has returned.
TEST_F(NcclCommunicatorMpiTest, CallsReturnBeforeTheStreamRunsThemAndSynchronizeWaits) {
  const size_t n = 333;
  const size_t size = static_cast<size_t>(comm_->size());
  DeviceBuffer buffer(n * sizeof(float)), gathered(size * n * sizeof(float));
  buffer.upload(rank_values(70, comm_->rank(), n));
  gathered.upload(testing::poisoned(size * n));
  {
    StreamGate gate(stream_);
    const Clock::time_point start = Clock::now();
    comm_->all_reduce(buffer.data(), buffer.data(), n, DType::kF32, ReduceOp::kSum);
    comm_->all_gather(buffer.data(), gathered.data(), n, DType::kF32);
    // Generous: a first operation may wait for NCCL to connect the ranks, never for the stream.
    EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(5000))
        << "a call waited for its data";
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_EQ(cudaStreamQuery(stream_), cudaErrorNotReady) << "the stream ran past the gate";
    gate.release();
  }
  const std::vector<float> sum = sum_over_ranks(70, comm_->size(), n);
  EXPECT_TRUE(testing::all_close(read<float>(buffer, n), sum, 0, 0)) << "all_reduce";
  std::vector<float> expected;
  for (size_t r = 0; r < size; ++r) expected.insert(expected.end(), sum.begin(), sum.end());
  EXPECT_TRUE(testing::all_close(read<float>(gathered, size * n), expected, 0, 0))
      << "all_gather of the reduced buffer, in stream order";
}

// An asynchronous operation runs on the communication stream after the compute stream's work so
// far: it reads the input the compute stream writes just before the post, even when that write is
// held back. wait() orders the compute stream after it without blocking the host.
TEST_F(NcclCommunicatorMpiTest, AsyncOperationsFollowTheComputeStreamAndWaitDoesNotBlock) {
  const size_t n = 257;
  DeviceBuffer input(n * sizeof(float)), work(n * sizeof(float));
  input.upload(rank_values(71, comm_->rank(), n));
  work.upload(testing::poisoned(n));
  std::unique_ptr<CommRequest> request;
  {
    StreamGate gate(stream_);
    cuda_check(cudaMemcpyAsync(work.data(), input.data(), n * sizeof(float),
                               cudaMemcpyDeviceToDevice, stream_),
               "cudaMemcpyAsync on the compute stream");
    const Clock::time_point start = Clock::now();
    request = comm_->all_reduce_async(work.data(), work.data(), n, DType::kF32, ReduceOp::kSum);
    EXPECT_FALSE(request->test());
    request->wait();
    EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(5000)) << "the host was blocked";
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_FALSE(request->test()) << "ran before the compute stream wrote its input";
    gate.release();
  }
  EXPECT_TRUE(
      testing::all_close(read<float>(work, n), sum_over_ranks(71, comm_->size(), n), 0, 0));
  EXPECT_TRUE(request->test());
}

// An operation that never completes (here its stream is held back past the deadline, as a peer
// that never arrives would hold it) is failed by the watchdog: the call returns at once,
// synchronize() throws the named CommTimeout at the deadline, the group is aborted, and every
// later call is refused with the same cause. Runs with one rank, unlike the missing-peer tests.
TEST_F(NcclCommunicatorMpiTest, AStuckOperationIsANamedTimeoutFromTheWatchdog) {
  const size_t n = 16;
  DeviceBuffer buffer(n * sizeof(float));
  // Once together, so that NCCL has connected the ranks and the next post cannot wait for it.
  comm_->all_reduce(buffer.data(), buffer.data(), n, DType::kF32, ReduceOp::kSum);
  comm_->synchronize();
  comm_->set_timeout(std::chrono::milliseconds(1000));

  StreamGate gate(stream_);
  const Clock::time_point start = Clock::now();
  comm_->all_reduce(buffer.data(), buffer.data(), n, DType::kF32, ReduceOp::kSum);  // #2
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(500)) << "the call waited";
  std::string message = "(no error)";
  bool timed_out = false;
  try {
    comm_->synchronize();
  } catch (const CommTimeout& e) {
    message = e.what();
    timed_out = true;
  } catch (const Error& e) {
    message = e.what();
  }
  const auto waited = Clock::now() - start;
  gate.release();  // NCCL's abort may wait for the stream to drain

  EXPECT_TRUE(timed_out) << message;
  const std::string group = "NCCL group 'world' (rank " + std::to_string(comm_->rank()) + " of " +
                            std::to_string(comm_->size()) + ", world rank " +
                            std::to_string(comm_->world_rank_of(comm_->rank())) + " on host ";
  for (const std::string& part :
       {std::string("all_reduce of 16 f32 elements (operation #2)"), group,
        "device " + std::to_string(device_), std::string("did not complete within 1000 ms"),
        std::string("peer(s) did not arrive"), std::string("the communicator was aborted")}) {
    EXPECT_TRUE(contains(message, part)) << "missing '" << part << "' in: " << message;
  }
  EXPECT_GE(waited, std::chrono::milliseconds(1000));
  EXPECT_LT(waited, std::chrono::milliseconds(5000));

  try {
    comm_->all_reduce(buffer.data(), buffer.data(), n, DType::kF32, ReduceOp::kSum);
    ADD_FAILURE() << "all_reduce on an aborted communicator returned";
  } catch (const CommTimeout& e) {
    EXPECT_TRUE(contains(e.what(), "all_reduce on NCCL group 'world'")) << e.what();
    EXPECT_TRUE(contains(e.what(), "aborted by an earlier error")) << e.what();
    EXPECT_TRUE(contains(e.what(), "(operation #2)")) << e.what();
  }
  EXPECT_THROW(comm_->synchronize(), CommTimeout);
  EXPECT_THROW(
      comm_->all_reduce_async(buffer.data(), buffer.data(), n, DType::kF32, ReduceOp::kSum),
      CommTimeout);
  EXPECT_THROW(comm_->barrier(), CommTimeout);
}

// Rank 0 never posts the second all-reduce: on the others the call returns at once and
// synchronize() throws the watchdog's CommTimeout at the deadline; the group is then aborted.
TEST_F(NcclCommunicatorMpiTest, AMissingPeerIsANamedTimeoutNotAHang) {
  if (comm_->size() < 2) GTEST_SKIP() << "needs 2 ranks";
  const size_t n = 16;
  DeviceBuffer buffer(n * sizeof(float));
  comm_->all_reduce(buffer.data(), buffer.data(), n, DType::kF32, ReduceOp::kSum);
  comm_->synchronize();
  comm_->set_timeout(std::chrono::milliseconds(2000));
  if (comm_->rank() != 0) {  // rank 0 never arrives
    const Clock::time_point start = Clock::now();
    comm_->all_reduce(buffer.data(), buffer.data(), n, DType::kF32, ReduceOp::kSum);
    EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(1000)) << "the call waited";
    try {
      comm_->synchronize();
      ADD_FAILURE() << "all_reduce without rank 0 completed";
    } catch (const CommTimeout& e) {
      const std::string message = e.what();
      EXPECT_TRUE(contains(message, "all_reduce of 16 f32 elements (operation #2)")) << message;
      EXPECT_TRUE(contains(message, "did not complete within 2000 ms")) << message;
      EXPECT_TRUE(contains(message, "group 'world'")) << message;
      EXPECT_TRUE(contains(message, "aborted")) << message;
    }
    EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(6000));
    try {
      comm_->barrier();
      ADD_FAILURE() << "barrier on an aborted communicator returned";
    } catch (const CommTimeout& e) {
      EXPECT_TRUE(contains(e.what(), "aborted by an earlier error")) << e.what();
    }
  }
  testing::mpi_world().barrier();
}

// The same at an asynchronous collective: the post and wait() return at once, the request and
// synchronize() throw the timeout, and new operations are refused.
TEST_F(NcclCommunicatorMpiTest, AMissingPeerAtAnAsyncCollectiveFailsItsRequest) {
  if (comm_->size() < 2) GTEST_SKIP() << "needs 2 ranks";
  const size_t n = 16;
  DeviceBuffer buffer(n * sizeof(float));
  comm_->all_reduce(buffer.data(), buffer.data(), n, DType::kF32, ReduceOp::kSum);
  comm_->synchronize();
  comm_->set_timeout(std::chrono::milliseconds(2000));
  if (comm_->rank() != 0) {
    const Clock::time_point start = Clock::now();
    std::unique_ptr<CommRequest> request =
        comm_->all_reduce_async(buffer.data(), buffer.data(), n, DType::kF32, ReduceOp::kSum);
    EXPECT_FALSE(request->test());
    request->wait();
    EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(1000)) << "the host was blocked";
    try {
      comm_->synchronize();
      ADD_FAILURE() << "async all_reduce without rank 0 completed";
    } catch (const CommTimeout& e) {
      const std::string message = e.what();
      EXPECT_TRUE(contains(message, "all_reduce of 16 f32 elements (operation #2)")) << message;
      EXPECT_TRUE(contains(message, "did not complete within 2000 ms")) << message;
      EXPECT_TRUE(contains(message, "group 'world'")) << message;
    }
    EXPECT_THROW(request->wait(), CommTimeout);
    EXPECT_THROW(request->test(), CommTimeout);
    EXPECT_THROW(comm_->all_reduce_async(buffer.data(), buffer.data(), n, DType::kF32,
                                         ReduceOp::kSum),
                 CommTimeout)
        << "an aborted communicator must refuse new operations";
  }
  testing::mpi_world().barrier();
}

// Rank 1 waits for a message rank 0 never sends: the timeout names the transfer and rank 0.
TEST_F(NcclCommunicatorMpiTest, AMissingSenderIsNamedInTheTimeout) {
  if (comm_->size() < 2) GTEST_SKIP() << "needs 2 ranks";
  const size_t n = 16;
  DeviceBuffer buffer(n * sizeof(float));
  // One exchange first, so that NCCL has connected ranks 0 and 1.
  if (comm_->rank() == 0) comm_->send(buffer.data(), n, DType::kF32, 1, 0);
  if (comm_->rank() == 1) comm_->recv(buffer.data(), n, DType::kF32, 0, 0);
  comm_->synchronize();
  comm_->set_timeout(std::chrono::milliseconds(2000));
  if (comm_->rank() == 1) {
    const Clock::time_point start = Clock::now();
    comm_->recv(buffer.data(), n, DType::kF32, 0, 5);
    EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(1000)) << "the call waited";
    try {
      comm_->synchronize();
      ADD_FAILURE() << "a recv that rank 0 never sent completed";
    } catch (const CommTimeout& e) {
      const std::string message = e.what();
      EXPECT_TRUE(contains(message, "recv of 16 f32 elements from rank 0 (tag 5) (operation #2)"))
          << message;
      EXPECT_TRUE(contains(message, "world rank " + std::to_string(comm_->world_rank_of(0)) +
                                        " did not post the matching operation"))
          << message;
    }
  }
  testing::mpi_world().barrier();
}

}  // namespace
}  // namespace loom::parallel

#endif  // LOOM_HAS_CUDA
