// NcclCommunicator: NCCL collectives on device buffers, each one enqueued and then awaited with a
// deadline (see nccl_communicator.h). Needs NCCL >= 2.18 (ncclCommSplit, non-blocking
// communicators with ncclConfig_t).
#include "parallel/nccl_communicator.h"

#include "core/base/cuda/check.h"

#include <unistd.h>

#include <array>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <sstream>
#include <thread>
#include <type_traits>
#include <utility>

#include "core/base/check.h"

#if NCCL_VERSION_CODE < NCCL_VERSION(2, 18, 0)
#error "Loom's NCCL communicator needs NCCL 2.18 or newer (ncclCommSplit)"
#endif

namespace loom::parallel {
namespace {

using Clock = std::chrono::steady_clock;

std::string host_name() {
  std::array<char, 256> name{};
  if (gethostname(name.data(), name.size() - 1) != 0) return "?";
  return name.data();
}

std::string where(const char* file, int line, int world_rank) {
  std::ostringstream out;
  out << file << ":" << line << " (world rank " << world_rank << " on host " << host_name() << ")";
  return out.str();
}

// NCCL's name for the error plus its last message, which says what went wrong.
std::string nccl_error_text(ncclResult_t status) {
  std::string text = ncclGetErrorString(status);
  const char* last = ncclGetLastError(nullptr);  // the argument is unused by NCCL
  if (last != nullptr && last[0] != '\0') text += std::string(" (last NCCL error: ") + last + ")";
  return text;
}

[[noreturn]] void throw_nccl_failure(const char* statement, ncclResult_t status, const char* file,
                                     int line, int world_rank) {
  throw Error(where(file, line, world_rank) + ": " + statement +
              " failed: " + nccl_error_text(status));
}

}  // namespace
}  // namespace loom::parallel

// Checked NCCL calls (CUDA ones: core/base/cuda/check.h): the message carries the statement,
// the error, file:line, world rank and host.
#define LOOM_NCCL_CHECK(statement, world_rank)                                               \
  do {                                                                                       \
    const ncclResult_t loom_nccl_status = (statement);                                       \
    if (loom_nccl_status != ncclSuccess) {                                                   \
      ::loom::parallel::throw_nccl_failure(#statement, loom_nccl_status, __FILE__, __LINE__, \
                                           (world_rank));                                    \
    }                                                                                        \
  } while (0)

// For calls on a non-blocking communicator, which may answer ncclInProgress; any other failure
// aborts the communicator (its peers may already be waiting in the operation).
#define LOOM_NCCL_ENQUEUE(communicator, statement) \
  (communicator).check_enqueued((statement), #statement, __FILE__, __LINE__)

namespace loom::parallel {
namespace {

struct PollResult {
  enum class Kind : uint8_t { kDone, kTimeout, kNcclError, kCudaError } kind = Kind::kDone;
  std::string error;  // NCCL's or CUDA's text for the error kinds
};

// Polls until no communicator in `comms` is ncclInProgress and, if `stream` is given, the stream
// is idle (if `event` is given, the work before it is done); or until an error, or the deadline.
PollResult poll_until_ready(std::initializer_list<ncclComm_t> comms, const cudaStream_t* stream,
                            Clock::time_point deadline, cudaEvent_t event = nullptr) {
  using Kind = PollResult::Kind;
  const Clock::time_point start = Clock::now();
  for (;;) {
    bool in_progress = false;
    for (ncclComm_t comm : comms) {
      ncclResult_t state = ncclSuccess;
      const ncclResult_t status = ncclCommGetAsyncError(comm, &state);
      if (status != ncclSuccess) {
        return {Kind::kNcclError, "ncclCommGetAsyncError: " + nccl_error_text(status)};
      }
      if (state == ncclInProgress) {
        in_progress = true;
      } else if (state != ncclSuccess) {
        return {Kind::kNcclError, nccl_error_text(state)};
      }
    }
    if (!in_progress) {
      if (stream == nullptr && event == nullptr) return {};
      const cudaError_t status =
          event != nullptr ? cudaEventQuery(event) : cudaStreamQuery(*stream);
      if (status == cudaSuccess) return {};
      if (status != cudaErrorNotReady) {
        return {Kind::kCudaError, std::string(event != nullptr ? "cudaEventQuery: "
                                                               : "cudaStreamQuery: ") +
                                      ::loom::cuda::error_text(status)};
      }
    }
    const Clock::time_point now = Clock::now();
    if (now >= deadline) return {Kind::kTimeout, {}};
    // Spin for the first millisecond (small collectives take microseconds), then sleep briefly
    // so that a long wait does not take a core from the data loader.
    if (now - start < std::chrono::milliseconds(1)) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
}

Clock::time_point deadline_after(std::chrono::milliseconds timeout) {
  // A timeout of years means "never": saturate instead of overflowing the clock.
  if (timeout > std::chrono::hours(24 * 365)) return Clock::time_point::max();
  return Clock::now() + timeout;
}

ncclDataType_t nccl_dtype(DType dtype) {
  switch (dtype) {
    case DType::kF32: return ncclFloat32;
    case DType::kBF16: return ncclBfloat16;
    case DType::kI32: return ncclInt32;
    case DType::kF64: return ncclFloat64;
  }
  throw Error(str_cat("NCCL communicator: unknown dtype", static_cast<int>(dtype)));
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kMax: return ncclMax;
  }
  throw Error(str_cat("NCCL communicator: unknown reduce op", static_cast<int>(op)));
}

// Non-blocking, so that initialisation, split and every operation can be given up on.
ncclConfig_t nccl_config(const std::string& name) {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 27, 0)
  config.commName = name.c_str();  // labels NCCL's own log lines
#else
  (void)name;
#endif
  return config;
}

std::string elements(size_t count, DType dtype) {
  return str_cat(count, dtype_name(dtype), "elements");
}

struct EventDestroyer {
  void operator()(cudaEvent_t event) const { cudaEventDestroy(event); }
};
using Event = std::unique_ptr<std::remove_pointer_t<cudaEvent_t>, EventDestroyer>;

constexpr const char* kCollectiveSuspects =
    "peer(s) did not arrive; NCCL cannot tell which (compare the operation numbers in the other "
    "ranks' messages)";

}  // namespace

std::unique_ptr<NcclCommunicator> NcclCommunicator::create(Communicator& bootstrap, int device,
                                                           cudaStream_t stream,
                                                           const std::string& name) {
  const int world_rank = bootstrap.world_rank_of(bootstrap.rank());
  // A rank that cannot start (no such device, no network for NCCL) says so over the bootstrap
  // before anyone enters the NCCL initialisation, so that the others fail at once with it
  // instead of waiting for the deadline.
  ncclUniqueId id{};
  std::string local_error;
  try {
    LOOM_CUDA_CHECK(cudaSetDevice(device));
    if (bootstrap.rank() == 0) LOOM_NCCL_CHECK(ncclGetUniqueId(&id), world_rank);
  } catch (const Error& error) {
    local_error = error.what();
  }
  int32_t failed = local_error.empty() ? 0 : 1;
  bootstrap.all_reduce(&failed, &failed, 1, DType::kI32, ReduceOp::kMax);
  if (!local_error.empty()) throw Error(local_error);
  if (failed != 0) {
    throw Error(str_cat(
        "NCCL communicator '" + name + "' not created on world rank", world_rank,
        ": another rank of group '" + bootstrap.name() + "' failed to prepare (see its message)"));
  }

  static_assert(sizeof(ncclUniqueId) % sizeof(int32_t) == 0);
  std::array<int32_t, sizeof(ncclUniqueId) / sizeof(int32_t)> id_words{};
  std::memcpy(id_words.data(), &id, sizeof(id));
  bootstrap.broadcast(id_words.data(), id_words.size(), DType::kI32, 0);
  std::memcpy(&id, id_words.data(), sizeof(id));

  std::unique_ptr<NcclCommunicator> result(
      new NcclCommunicator(bootstrap, nullptr, device, stream, name));
  result->timeout_ = bootstrap.timeout();
  ncclConfig_t config = nccl_config(result->name_);
  LOOM_NCCL_ENQUEUE(
      *result, ncclCommInitRankConfig(&result->comm_, result->size_, id, result->rank_, &config));
  result->wait("initialisation", "peer(s) did not call NcclCommunicator::create", false);
  result->finish_setup();
  return result;
}

NcclCommunicator::NcclCommunicator(Communicator& bootstrap,
                                   std::unique_ptr<Communicator> owned_bootstrap, int device,
                                   cudaStream_t stream, std::string name)
    : bootstrap_(bootstrap),
      owned_bootstrap_(std::move(owned_bootstrap)),
      device_(device),
      stream_(stream),
      name_(std::move(name)),
      rank_(bootstrap.rank()),
      size_(bootstrap.size()) {
  world_ranks_.reserve(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) world_ranks_.push_back(bootstrap.world_rank_of(r));
}

void NcclCommunicator::finish_setup() {
  int nccl_rank = -1;
  int nccl_size = -1;
  LOOM_NCCL_CHECK(ncclCommUserRank(comm_, &nccl_rank), world_rank());
  LOOM_NCCL_CHECK(ncclCommCount(comm_, &nccl_size), world_rank());
  LOOM_CHECK(nccl_rank == rank_ && nccl_size == size_, "NCCL places", describe(), "at rank",
             nccl_rank, "of", nccl_size, "but its bootstrap at rank", rank_, "of", size_);
  LOOM_CUDA_CHECK(cudaMalloc(&barrier_scratch_, sizeof(float)));
  LOOM_CUDA_CHECK(cudaMemset(barrier_scratch_, 0, sizeof(float)));
}

NcclCommunicator::~NcclCommunicator() {
  // A destructor cannot report: errors here are ignored, and a communicator that does not
  // finalize in time is aborted rather than left to block the process forever.
  if (comm_ != nullptr) {
    const ncclResult_t status = ncclCommFinalize(comm_);
    bool finalized = status == ncclSuccess || status == ncclInProgress;
    if (finalized) {
      const PollResult poll = poll_until_ready({comm_}, nullptr, deadline_after(timeout_));
      finalized = poll.kind == PollResult::Kind::kDone;
    }
    if (finalized) {
      ncclCommDestroy(comm_);
    } else {
      ncclCommAbort(comm_);
    }
    comm_ = nullptr;
  }
  if (barrier_scratch_ != nullptr) cudaFree(barrier_scratch_);
}

int NcclCommunicator::world_rank_of(int group_rank) const {
  LOOM_CHECK(group_rank >= 0 && group_rank < size_, "rank", group_rank,
             "is outside group '" + name_ + "' of size", size_);
  return world_ranks_[static_cast<size_t>(group_rank)];
}

std::string NcclCommunicator::describe() const {
  std::ostringstream out;
  out << "NCCL group '" << name_ << "' (rank " << rank_ << " of " << size_ << ", world rank "
      << world_rank() << " on host " << host_name() << ", device " << device_ << ")";
  return out.str();
}

void NcclCommunicator::check_usable(const char* op) const {
  if (comm_ == nullptr) {
    throw Error(std::string(op) + " on " + describe() +
                ": the communicator was aborted by an earlier error and cannot be used");
  }
}

void NcclCommunicator::abort_and_throw(const std::string& message) {
  if (comm_ != nullptr) {
    ncclCommAbort(comm_);  // also stops this rank's kernels still waiting for peers
    comm_ = nullptr;
  }
  throw Error(message + "; the communicator was aborted");
}

void NcclCommunicator::check_enqueued(ncclResult_t status, const char* statement, const char* file,
                                      int line) {
  if (status == ncclSuccess || status == ncclInProgress) return;
  const std::string text = nccl_error_text(status);  // before the abort adds its own
  abort_and_throw(where(file, line, world_rank()) + ": " + statement + " failed in " + describe() +
                  ": " + text);
}

void NcclCommunicator::wait(const std::string& what, const std::string& suspects,
                            bool drain_stream) {
  await(what, suspects, operations_, timeout_, drain_stream ? &stream_ : nullptr, nullptr,
        deadline_after(timeout_));
}

void NcclCommunicator::await(const std::string& what, const std::string& suspects,
                             uint64_t operation, std::chrono::milliseconds timeout,
                             const cudaStream_t* stream, cudaEvent_t event,
                             Clock::time_point deadline) {
  const PollResult poll = poll_until_ready({comm_}, stream, deadline, event);
  switch (poll.kind) {
    case PollResult::Kind::kDone:
      return;
    case PollResult::Kind::kTimeout:
      abort_and_throw(str_cat(what, "(operation #" + std::to_string(operation) + ") in",
                              describe(), "did not complete within", timeout.count(),
                              "ms:", suspects));
    case PollResult::Kind::kNcclError:
    case PollResult::Kind::kCudaError:
      abort_and_throw(str_cat(what, "(operation #" + std::to_string(operation) + ") failed in",
                              describe() + ":", poll.error));
  }
}

// --- asynchronous collectives ------------------------------------------------------------------

class NcclCommunicator::Request final : public CommRequest {
 public:
  Request(NcclCommunicator& owner, Event event, std::string what, std::string suspects,
          uint64_t operation, std::chrono::milliseconds timeout, Clock::time_point deadline)
      : owner_(owner),
        event_(std::move(event)),
        what_(std::move(what)),
        suspects_(std::move(suspects)),
        operation_(operation),
        timeout_(timeout),
        deadline_(deadline) {}
  Request(const Request&) = delete;
  Request& operator=(const Request&) = delete;

  ~Request() override {
    try {
      wait();
    } catch (const Error&) {
      // A destructor cannot report; the communicator is aborted, which its next call reports.
    }
  }

  void wait() override {
    if (complete_) return;
    if (!failure_.empty()) throw Error(failure_);
    try {
      if (owner_.comm_ == nullptr) {
        // Aborted by another operation's failure: this one completed before, or never will.
        if (cudaEventQuery(event_.get()) == cudaSuccess) {
          complete_ = true;
          return;
        }
        owner_.check_usable(what_.c_str());
      }
      owner_.await(what_, suspects_, operation_, timeout_, nullptr, event_.get(),
                   deadline_);
    } catch (const Error& error) {
      failure_ = error.what();
      throw;
    }
    complete_ = true;
  }

  bool test() override {
    if (complete_) return true;
    if (!failure_.empty()) throw Error(failure_);
    const cudaError_t status = cudaEventQuery(event_.get());
    if (status == cudaErrorNotReady) return false;
    wait();  // done, or an error that wait() reports (and aborts on) without waiting
    return true;
  }

 private:
  NcclCommunicator& owner_;
  Event event_;
  std::string what_;      // "all_reduce of 10 f32 elements"
  std::string suspects_;  // who may not have arrived, named on a timeout
  uint64_t operation_ = 0;
  std::chrono::milliseconds timeout_;
  Clock::time_point deadline_;
  bool complete_ = false;
  std::string failure_;  // the error wait() threw, thrown again by later calls
};

template <typename Enqueue>
std::unique_ptr<CommRequest> NcclCommunicator::post_async(const char* op, std::string what,
                                                          std::string suspects,
                                                          Enqueue&& enqueue) {
  check_usable(op);
  // Created before the operation is enqueued, so that a failure here leaves nothing in flight.
  cudaEvent_t raw_event = nullptr;
  LOOM_CUDA_CHECK(cudaEventCreateWithFlags(&raw_event, cudaEventDisableTiming));
  Event event(raw_event);
  ++operations_;
  const Clock::time_point deadline = deadline_after(timeout_);
  enqueue();
  // A non-blocking communicator may still be enqueueing (ncclInProgress): NCCL takes no other
  // call until it has finished, so wait for that (not for the operation).
  await(what, suspects, operations_, timeout_, nullptr, nullptr, deadline);
  const cudaError_t recorded = cudaEventRecord(event.get(), stream_);
  if (recorded != cudaSuccess) {
    abort_and_throw(str_cat(what, "(operation #" + std::to_string(operations_) + ") in",
                            describe() + ": cudaEventRecord after it failed:",
                            ::loom::cuda::error_text(recorded)));
  }
  return std::make_unique<Request>(*this, std::move(event), std::move(what), std::move(suspects),
                                   operations_, timeout_, deadline);
}

std::unique_ptr<CommRequest> NcclCommunicator::all_reduce_async(const void* send, void* recv,
                                                                size_t count, DType dtype,
                                                                ReduceOp op) {
  auto request = post_async("all_reduce", "all_reduce of " + elements(count, dtype),
                            kCollectiveSuspects, [&] {
                              LOOM_NCCL_ENQUEUE(*this, ncclAllReduce(send, recv, count,
                                                                     nccl_dtype(dtype), nccl_op(op),
                                                                     comm_, stream_));
                            });
  stats_.add(CommOp::kAllReduce, count * dtype_size(dtype));
  return request;
}

std::unique_ptr<CommRequest> NcclCommunicator::all_gather_async(const void* send, void* recv,
                                                                size_t count_per_rank,
                                                                DType dtype) {
  auto request = post_async(
      "all_gather", "all_gather of " + elements(count_per_rank, dtype) + " per rank",
      kCollectiveSuspects, [&] {
        LOOM_NCCL_ENQUEUE(
            *this, ncclAllGather(send, recv, count_per_rank, nccl_dtype(dtype), comm_, stream_));
      });
  stats_.add(CommOp::kAllGather, count_per_rank * static_cast<size_t>(size_) * dtype_size(dtype));
  return request;
}

std::unique_ptr<CommRequest> NcclCommunicator::reduce_scatter_async(const void* send, void* recv,
                                                                    size_t count_per_rank,
                                                                    DType dtype, ReduceOp op) {
  auto request = post_async(
      "reduce_scatter", "reduce_scatter of " + elements(count_per_rank, dtype) + " per rank",
      kCollectiveSuspects, [&] {
        LOOM_NCCL_ENQUEUE(*this, ncclReduceScatter(send, recv, count_per_rank, nccl_dtype(dtype),
                                                   nccl_op(op), comm_, stream_));
      });
  stats_.add(CommOp::kReduceScatter,
             count_per_rank * static_cast<size_t>(size_) * dtype_size(dtype));
  return request;
}

// --- blocking operations -------------------------------------------------------------------------

void NcclCommunicator::all_reduce(const void* send, void* recv, size_t count, DType dtype,
                                  ReduceOp op) {
  check_usable("all_reduce");
  ++operations_;
  LOOM_NCCL_ENQUEUE(
      *this, ncclAllReduce(send, recv, count, nccl_dtype(dtype), nccl_op(op), comm_, stream_));
  wait("all_reduce of " + elements(count, dtype), kCollectiveSuspects, true);
  stats_.add(CommOp::kAllReduce, count * dtype_size(dtype));
}

void NcclCommunicator::all_gather(const void* send, void* recv, size_t count_per_rank,
                                  DType dtype) {
  check_usable("all_gather");
  ++operations_;
  LOOM_NCCL_ENQUEUE(*this,
                    ncclAllGather(send, recv, count_per_rank, nccl_dtype(dtype), comm_, stream_));
  wait("all_gather of " + elements(count_per_rank, dtype) + " per rank", kCollectiveSuspects, true);
  stats_.add(CommOp::kAllGather, count_per_rank * static_cast<size_t>(size_) * dtype_size(dtype));
}

void NcclCommunicator::reduce_scatter(const void* send, void* recv, size_t count_per_rank,
                                      DType dtype, ReduceOp op) {
  check_usable("reduce_scatter");
  ++operations_;
  LOOM_NCCL_ENQUEUE(*this, ncclReduceScatter(send, recv, count_per_rank, nccl_dtype(dtype),
                                             nccl_op(op), comm_, stream_));
  wait("reduce_scatter of " + elements(count_per_rank, dtype) + " per rank", kCollectiveSuspects,
       true);
  stats_.add(CommOp::kReduceScatter,
             count_per_rank * static_cast<size_t>(size_) * dtype_size(dtype));
}

void NcclCommunicator::broadcast(void* buffer, size_t count, DType dtype, int root) {
  check_usable("broadcast");
  LOOM_CHECK(root >= 0 && root < size_, "broadcast root", root, "is outside", describe());
  ++operations_;
  LOOM_NCCL_ENQUEUE(*this,
                    ncclBroadcast(buffer, buffer, count, nccl_dtype(dtype), root, comm_, stream_));
  wait("broadcast of " + elements(count, dtype) + " from rank " + std::to_string(root),
       kCollectiveSuspects, true);
  stats_.add(CommOp::kBroadcast, count * dtype_size(dtype));
}

void NcclCommunicator::send(const void* buffer, size_t count, DType dtype, int peer, int tag) {
  const P2POp op{P2POp::Kind::kSend, const_cast<void*>(buffer), count, dtype, peer, tag};
  send_recv_batch(std::span<const P2POp>(&op, 1));
}

void NcclCommunicator::recv(void* buffer, size_t count, DType dtype, int peer, int tag) {
  const P2POp op{P2POp::Kind::kRecv, buffer, count, dtype, peer, tag};
  send_recv_batch(std::span<const P2POp>(&op, 1));
}

void NcclCommunicator::send_recv_batch(std::span<const P2POp> ops) {
  send_recv_batch_async(ops)->wait();
}

std::unique_ptr<CommRequest> NcclCommunicator::send_recv_batch_async(std::span<const P2POp> ops) {
  check_usable("send_recv_batch");
  std::ostringstream what;
  std::ostringstream peers;
  what << (ops.size() == 1 ? "" : "send_recv_batch: ");
  for (size_t i = 0; i < ops.size(); ++i) {
    const P2POp& op = ops[i];
    const bool is_send = op.kind == P2POp::Kind::kSend;
    LOOM_CHECK(op.peer >= 0 && op.peer < size_, is_send ? "send to" : "recv from", "rank", op.peer,
               "is outside", describe());
    LOOM_CHECK(op.buffer != nullptr || op.count == 0, is_send ? "send" : "recv", "of", op.count,
               "elements has a null buffer");
    nccl_dtype(op.dtype);  // throws for a bad dtype here, not inside the group below
    what << (i == 0 ? "" : ", ") << (is_send ? "send of " : "recv of ")
         << elements(op.count, op.dtype) << (is_send ? " to rank " : " from rank ") << op.peer
         << " (tag " << op.tag << ")";
    peers << (i == 0 ? "" : ", ") << world_ranks_[static_cast<size_t>(op.peer)];
  }
  auto request = post_async(
      "send_recv_batch", what.str(),
      (ops.size() == 1 ? "world rank " : "one of world ranks ") + peers.str() +
          " did not post the matching operation",
      [&] {
        // Every call is made even after one fails, so that the group is always closed; the
        // first failure is reported.
        ncclResult_t first_error = ncclSuccess;
        const char* failed_call = nullptr;
        LOOM_NCCL_ENQUEUE(*this, ncclGroupStart());
        for (const P2POp& op : ops) {
          const ncclResult_t status =
              op.kind == P2POp::Kind::kSend
                  ? ncclSend(op.buffer, op.count, nccl_dtype(op.dtype), op.peer, comm_, stream_)
                  : ncclRecv(op.buffer, op.count, nccl_dtype(op.dtype), op.peer, comm_, stream_);
          if (status != ncclSuccess && status != ncclInProgress && first_error == ncclSuccess) {
            first_error = status;
            failed_call = op.kind == P2POp::Kind::kSend ? "ncclSend" : "ncclRecv";
          }
        }
        const ncclResult_t end_status = ncclGroupEnd();
        if (first_error != ncclSuccess) {
          check_enqueued(first_error, failed_call, __FILE__, __LINE__);
        }
        check_enqueued(end_status, "ncclGroupEnd()", __FILE__, __LINE__);
      });
  for (const P2POp& op : ops) {
    stats_.add(op.kind == P2POp::Kind::kSend ? CommOp::kSend : CommOp::kRecv,
               op.count * dtype_size(op.dtype));
  }
  return request;
}

void NcclCommunicator::barrier() {
  check_usable("barrier");
  ++operations_;
  // NCCL has no barrier: an all-reduce of one element waits for every rank just the same.
  LOOM_NCCL_ENQUEUE(*this, ncclAllReduce(barrier_scratch_, barrier_scratch_, 1, ncclFloat32,
                                         ncclSum, comm_, stream_));
  wait("barrier", kCollectiveSuspects, true);
  stats_.add(CommOp::kBarrier, 0);
}

std::unique_ptr<Communicator> NcclCommunicator::split(int color, int key, const std::string& name) {
  check_usable("split");
  LOOM_CHECK(color >= 0, "split of", describe(), "into '" + name + "': color", color,
             "must be non-negative (NCCL reserves negative colors)");
  // The bootstrap is split first, in lockstep: it gives the new group's world ranks, and its
  // deadline names a rank that never arrives.
  std::unique_ptr<Communicator> child_bootstrap = bootstrap_.split(color, key, name);
  Communicator& child_bootstrap_ref = *child_bootstrap;
  std::unique_ptr<NcclCommunicator> child(new NcclCommunicator(
      child_bootstrap_ref, std::move(child_bootstrap), device_, stream_, name));
  child->timeout_ = timeout_;
  ++operations_;
  ncclConfig_t config = nccl_config(child->name_);
  const ncclResult_t status = ncclCommSplit(comm_, color, key, &child->comm_, &config);
  if (status != ncclSuccess && status != ncclInProgress && child->comm_ != nullptr) {
    ncclCommAbort(child->comm_);  // a half-made child is not finalized by its destructor
    child->comm_ = nullptr;
  }
  check_enqueued(status, "ncclCommSplit(comm_, color, key, &child->comm_, &config)", __FILE__,
                 __LINE__);
  // The parent as well as the child is busy until the split completes.
  const PollResult poll =
      poll_until_ready({comm_, child->comm_}, nullptr, deadline_after(timeout_));
  if (poll.kind != PollResult::Kind::kDone) {
    ncclCommAbort(child->comm_);
    child->comm_ = nullptr;
    const std::string what = "split into '" + name + "' (color " + std::to_string(color) +
                             ", key " + std::to_string(key) + ", operation #" +
                             std::to_string(operations_) + ")";
    if (poll.kind == PollResult::Kind::kTimeout) {
      abort_and_throw(str_cat(what, "in", describe(), "did not complete within", timeout_.count(),
                              "ms:", kCollectiveSuspects));
    }
    abort_and_throw(str_cat(what, "failed in", describe() + ":", poll.error));
  }
  child->finish_setup();
  return child;
}

}  // namespace loom::parallel
