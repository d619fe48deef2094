// NcclCommunicator: NCCL collectives on device buffers, enqueued in stream order, with a watchdog
// thread keeping their deadlines (see nccl_communicator.h). Needs NCCL >= 2.18 (ncclCommSplit,
// non-blocking communicators with ncclConfig_t).
#include "parallel/nccl_communicator.h"

#include "core/base/cuda/check.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <sstream>
#include <thread>
#include <utility>

#include "core/base/check.h"
#include "core/base/process.h"

#if NCCL_VERSION_CODE < NCCL_VERSION(2, 18, 0)
#error "Loom's NCCL communicator needs NCCL 2.18 or newer (ncclCommSplit)"
#endif

namespace loom::parallel {
namespace {

using Clock = std::chrono::steady_clock;

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

// One NCCL call's result, checked after the NCCL lock is released (a failure aborts, which takes
// the lock).
struct NcclCall {
  ncclResult_t status = ncclSuccess;
  const char* statement = "";
  int line = 0;
};

bool call_failed(const NcclCall& call) {
  return call.status != ncclSuccess && call.status != ncclInProgress;
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

// A call on a non-blocking communicator, which may answer ncclInProgress, kept for the check.
#define LOOM_NCCL_CALL(statement) (::loom::parallel::NcclCall{(statement), #statement, __LINE__})

namespace loom::parallel {
namespace {

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

constexpr const char* kCollectiveSuspects =
    "peer(s) did not arrive; NCCL cannot tell which (compare the operation numbers in the other "
    "ranks' messages)";

// An operation as the watchdog sees it: done when the event recorded after it is reached.
class EventCompletion final : public Completion {
 public:
  explicit EventCompletion(std::shared_ptr<cuda::Event> event) : event_(std::move(event)) {}
  Status poll() override {
    const cudaError_t status = cudaEventQuery(event_->get());
    if (status == cudaSuccess) return {State::kDone, {}};
    if (status == cudaErrorNotReady) return {State::kPending, {}};
    return {State::kFailed, "cudaEventQuery: " + cuda::error_text(status)};
  }

 private:
  std::shared_ptr<cuda::Event> event_;
};

// The enqueueing calls, shared by the blocking and the asynchronous operations. Arguments are
// converted here, so that a bad dtype throws before anything is enqueued.
auto all_reduce_call(const void* send, void* recv, size_t count, DType dtype, ReduceOp op) {
  const ncclDataType_t type = nccl_dtype(dtype);
  const ncclRedOp_t reduce = nccl_op(op);
  return [=](ncclComm_t comm, cudaStream_t stream) {
    return LOOM_NCCL_CALL(ncclAllReduce(send, recv, count, type, reduce, comm, stream));
  };
}

auto all_gather_call(const void* send, void* recv, size_t count_per_rank, DType dtype) {
  const ncclDataType_t type = nccl_dtype(dtype);
  return [=](ncclComm_t comm, cudaStream_t stream) {
    return LOOM_NCCL_CALL(ncclAllGather(send, recv, count_per_rank, type, comm, stream));
  };
}

auto reduce_scatter_call(const void* send, void* recv, size_t count_per_rank, DType dtype,
                         ReduceOp op) {
  const ncclDataType_t type = nccl_dtype(dtype);
  const ncclRedOp_t reduce = nccl_op(op);
  return [=](ncclComm_t comm, cudaStream_t stream) {
    return LOOM_NCCL_CALL(
        ncclReduceScatter(send, recv, count_per_rank, type, reduce, comm, stream));
  };
}

// One NCCL group of sends and receives. `ops` must outlive the call of the result.
auto send_recv_call(std::span<const P2POp> ops) {
  return [ops](ncclComm_t comm, cudaStream_t stream) {
    // Every call is made even after one fails, so that the group is always closed; the first
    // failure is reported.
    NcclCall first = LOOM_NCCL_CALL(ncclGroupStart());
    if (call_failed(first)) return first;
    for (const P2POp& op : ops) {
      const NcclCall call =
          op.kind == P2POp::Kind::kSend
              ? LOOM_NCCL_CALL(
                    ncclSend(op.buffer, op.count, nccl_dtype(op.dtype), op.peer, comm, stream))
              : LOOM_NCCL_CALL(
                    ncclRecv(op.buffer, op.count, nccl_dtype(op.dtype), op.peer, comm, stream));
      if (call_failed(call) && !call_failed(first)) first = call;
    }
    const NcclCall end = LOOM_NCCL_CALL(ncclGroupEnd());
    return call_failed(first) ? first : end;
  };
}

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

  std::unique_ptr<NcclCommunicator> result(new NcclCommunicator(
      bootstrap, nullptr, device, stream, name, std::make_shared<std::mutex>()));
  result->timeout_ = bootstrap.timeout();
  const Clock::time_point deadline = deadline_after(result->timeout_);
  ncclConfig_t config = nccl_config(result->name_);
  NcclCall init;
  {
    std::lock_guard<std::mutex> lock(*result->nccl_lock_);
    init = LOOM_NCCL_CALL(
        ncclCommInitRankConfig(&result->comm_, result->size_, id, result->rank_, &config));
  }
  if (call_failed(init)) {
    result->fail(false, where(__FILE__, init.line, world_rank) + ": " + init.statement +
                            " failed in " + result->describe() + ": " +
                            nccl_error_text(init.status));
  }
  bool timed_out = false;
  const std::string error = result->wait_nccl({&result->comm_}, deadline, timed_out);
  if (timed_out) {
    result->fail(true, str_cat("initialisation of", result->describe(), "did not complete within",
                               result->timeout_.count(),
                               "ms: peer(s) did not call NcclCommunicator::create"));
  }
  if (!error.empty()) {
    result->fail(false, "initialisation of " + result->describe() + " failed: " + error);
  }
  result->finish_setup();
  return result;
}

NcclCommunicator::NcclCommunicator(Communicator& bootstrap,
                                   std::unique_ptr<Communicator> owned_bootstrap, int device,
                                   cudaStream_t stream, std::string name,
                                   std::shared_ptr<std::mutex> nccl_lock)
    : nccl_lock_(std::move(nccl_lock)),
      bootstrap_(bootstrap),
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
  {
    std::lock_guard<std::mutex> lock(*nccl_lock_);
    LOOM_NCCL_CHECK(ncclCommUserRank(comm_, &nccl_rank), world_rank());
    LOOM_NCCL_CHECK(ncclCommCount(comm_, &nccl_size), world_rank());
  }
  LOOM_CHECK(nccl_rank == rank_ && nccl_size == size_, "NCCL places", describe(), "at rank",
             nccl_rank, "of", nccl_size, "but its bootstrap at rank", rank_, "of", size_);
  LOOM_CUDA_CHECK(cudaSetDevice(device_));
  LOOM_CUDA_CHECK(cudaMalloc(&barrier_scratch_, sizeof(float)));
  LOOM_CUDA_CHECK(cudaMemset(barrier_scratch_, 0, sizeof(float)));
  // The highest priority, so that a reduction whose inputs are ready gets the SMs it needs ahead
  // of the backward's kernels it overlaps.
  int lowest_priority = 0;
  int highest_priority = 0;
  LOOM_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&lowest_priority, &highest_priority));
  LOOM_CUDA_CHECK(cudaStreamCreateWithPriority(&communication_stream_, cudaStreamNonBlocking,
                                               highest_priority));
  compute_ready_ = std::make_unique<cuda::Event>();
  watchdog_ = std::make_unique<Watchdog>(
      WatchedGroup{"NCCL", name_, rank_, size_, world_rank(), host_name(),
                   "device " + std::to_string(device_)},
      static_cast<WatchdogTarget&>(*this), Watchdog::Options{});
}

NcclCommunicator::~NcclCommunicator() {
  // A destructor cannot report: errors here are ignored, and a communicator that does not
  // finalize in time is aborted rather than left to block the process forever.
  if (watchdog_ != nullptr) {
    try {
      watchdog_->wait_all();  // each operation completes, or the watchdog aborts at its deadline
    } catch (const std::exception&) {
      // Aborted: comm_ is null.
    }
    watchdog_.reset();  // joins its thread: from here on nothing else touches comm_
  }
  if (comm_ != nullptr) {
    const ncclResult_t status = ncclCommFinalize(comm_);
    bool finalized = status == ncclSuccess || status == ncclInProgress;
    if (finalized) {
      bool timed_out = false;
      finalized = wait_nccl({&comm_}, deadline_after(timeout_), timed_out).empty();
    }
    if (finalized) {
      ncclCommDestroy(comm_);
    } else {
      ncclCommAbort(comm_);
    }
    comm_ = nullptr;
  }
  if (communication_stream_ != nullptr) cudaStreamDestroy(communication_stream_);
  if (barrier_scratch_ != nullptr) cudaFree(barrier_scratch_);
}

int NcclCommunicator::world_rank_of(int group_rank) const {
  LOOM_CHECK(group_rank >= 0 && group_rank < size_, "rank", group_rank,
             "is outside group '" + name_ + "' of size", size_);
  return world_ranks_[static_cast<size_t>(group_rank)];
}

std::string NcclCommunicator::describe() const {
  if (watchdog_ != nullptr) return watchdog_->group().describe();
  return WatchedGroup{"NCCL", name_, rank_, size_, world_rank(), host_name(),
                      "device " + std::to_string(device_)}
      .describe();
}

void NcclCommunicator::check_usable(const char* op) const {
  if (watchdog_ != nullptr) watchdog_->check(op);
}

void NcclCommunicator::fail(bool timeout, const std::string& message) {
  if (watchdog_ != nullptr) watchdog_->fail(timeout, message);
  // Before the watchdog runs (initialisation) this thread is the only one.
  abort();
  const std::string aborted = message + "; the communicator was aborted";
  if (timeout) throw CommTimeout(aborted);
  throw Error(aborted);
}

std::string NcclCommunicator::wait_nccl(std::initializer_list<ncclComm_t*> comms,
                                        Clock::time_point deadline, bool& timed_out) {
  timed_out = false;
  // Connecting takes milliseconds to seconds: start with short sleeps, then back off.
  std::chrono::microseconds sleep(10);
  for (;;) {
    bool in_progress = false;
    {
      std::lock_guard<std::mutex> lock(*nccl_lock_);
      for (ncclComm_t* comm : comms) {
        if (*comm == nullptr) return "the communicator was aborted";
        ncclResult_t state = ncclSuccess;
        const ncclResult_t status = ncclCommGetAsyncError(*comm, &state);
        if (status != ncclSuccess) return "ncclCommGetAsyncError: " + nccl_error_text(status);
        if (state == ncclInProgress) {
          in_progress = true;
        } else if (state != ncclSuccess) {
          return nccl_error_text(state);
        }
      }
    }
    if (!in_progress) return {};
    if (Clock::now() >= deadline) {
      timed_out = true;
      return "timed out";
    }
    std::this_thread::sleep_for(sleep);
    sleep = std::min(sleep * 2, std::chrono::microseconds(1000));
  }
}

// --- the watchdog's view -----------------------------------------------------------------------

void NcclCommunicator::enter_thread() {
  cudaSetDevice(device_);  // events of this device are queried from here; an error shows there
}

std::string NcclCommunicator::async_error() {
  std::lock_guard<std::mutex> lock(*nccl_lock_);
  if (comm_ == nullptr) return {};  // aborted: the failure is already recorded
  ncclResult_t state = ncclSuccess;
  const ncclResult_t status = ncclCommGetAsyncError(comm_, &state);
  if (status != ncclSuccess) return "ncclCommGetAsyncError: " + nccl_error_text(status);
  if (state == ncclSuccess || state == ncclInProgress) return {};
  return nccl_error_text(state);
}

void NcclCommunicator::abort() {
  std::lock_guard<std::mutex> lock(*nccl_lock_);
  if (comm_ == nullptr) return;
  ncclCommAbort(comm_);  // also makes this rank's kernels still waiting for peers return
  comm_ = nullptr;
}

// --- posting -------------------------------------------------------------------------------------

template <typename Enqueue>
std::shared_ptr<cuda::Event> NcclCommunicator::post(const char* op, std::string what,
                                                    std::string suspects, cudaStream_t stream,
                                                    Enqueue&& enqueue) {
  check_usable(op);
  // Made before the operation is enqueued, so that a failure here leaves nothing in flight.
  auto done = std::make_shared<cuda::Event>();
  const uint64_t sequence = ++operations_;
  const Clock::time_point deadline = deadline_after(timeout_);
  const std::string label = what + " (operation #" + std::to_string(sequence) + ")";
  NcclCall call;
  bool aborted = false;
  {
    std::lock_guard<std::mutex> lock(*nccl_lock_);
    aborted = comm_ == nullptr;
    if (!aborted) call = enqueue(comm_, stream);
  }
  if (aborted) {
    check_usable(op);  // throws the watchdog's failure, which aborted it
    fail(false, label + " in " + describe() + ": the communicator was aborted");
  }
  if (call_failed(call)) {
    fail(false, where(__FILE__, call.line, world_rank()) + ": " + call.statement + " failed for " +
                    label + " in " + describe() + ": " + nccl_error_text(call.status));
  }
  if (call.status == ncclInProgress) {
    // NCCL finishes the enqueue in the background (it is connecting to the peers) and takes no
    // other call until then; the event must follow the operation's kernels on the stream.
    bool timed_out = false;
    const std::string error = wait_nccl({&comm_}, deadline, timed_out);
    if (!error.empty()) {
      check_usable(op);
      if (timed_out) {
        fail(true, str_cat(label, "in", describe(), "did not complete within", timeout_.count(),
                           "ms (NCCL was still connecting to the peers):", suspects));
      }
      fail(false, label + " failed in " + describe() + ": " + error);
    }
  }
  const cudaError_t recorded = cudaEventRecord(done->get(), stream);
  if (recorded != cudaSuccess) {
    fail(false, label + " in " + describe() +
                    ": cudaEventRecord after it failed: " + cuda::error_text(recorded));
  }
  watchdog_->watch(WatchedOperation{std::move(what), sequence, std::move(suspects), timeout_},
                   std::make_unique<EventCompletion>(done));
  return done;
}

// --- asynchronous operations ---------------------------------------------------------------------

class NcclCommunicator::Request final : public CommRequest {
 public:
  Request(NcclCommunicator& owner, std::shared_ptr<cuda::Event> done)
      : owner_(owner), done_(std::move(done)) {}
  Request(const Request&) = delete;
  Request& operator=(const Request&) = delete;

  ~Request() override {
    // What wait() does, but silently: the compute stream never runs ahead of the operation.
    if (!waited_) cudaStreamWaitEvent(owner_.stream_, done_->get(), 0);
  }

  void wait() override {
    if (!waited_) {
      done_->wait_on(owner_.stream_);
      waited_ = true;
    }
    owner_.watchdog_->rethrow_failure();
  }

  bool test() override {
    const cudaError_t status = cudaEventQuery(done_->get());
    // After the query: an operation that an abort made return is complete, but garbage.
    owner_.watchdog_->rethrow_failure();
    if (status == cudaErrorNotReady) return false;
    LOOM_CUDA_CHECK(status);
    return true;
  }

 private:
  NcclCommunicator& owner_;
  std::shared_ptr<cuda::Event> done_;  // recorded after the operation, on the communication stream
  bool waited_ = false;
};

template <typename Enqueue>
std::unique_ptr<CommRequest> NcclCommunicator::post_async(const char* op, std::string what,
                                                          std::string suspects,
                                                          Enqueue&& enqueue) {
  check_usable(op);
  // The operation reads what the compute stream has produced so far, and nothing after.
  compute_ready_->record(stream_);
  compute_ready_->wait_on(communication_stream_);
  std::shared_ptr<cuda::Event> done = post(op, std::move(what), std::move(suspects),
                                           communication_stream_, std::forward<Enqueue>(enqueue));
  return std::make_unique<Request>(*this, std::move(done));
}

std::unique_ptr<CommRequest> NcclCommunicator::all_reduce_async(const void* send, void* recv,
                                                                size_t count, DType dtype,
                                                                ReduceOp op) {
  auto request = post_async("all_reduce", "all_reduce of " + elements(count, dtype),
                            kCollectiveSuspects, all_reduce_call(send, recv, count, dtype, op));
  stats_.add(CommOp::kAllReduce, count * dtype_size(dtype));
  return request;
}

std::unique_ptr<CommRequest> NcclCommunicator::all_gather_async(const void* send, void* recv,
                                                                size_t count_per_rank,
                                                                DType dtype) {
  auto request = post_async(
      "all_gather", "all_gather of " + elements(count_per_rank, dtype) + " per rank",
      kCollectiveSuspects, all_gather_call(send, recv, count_per_rank, dtype));
  stats_.add(CommOp::kAllGather, count_per_rank * static_cast<size_t>(size_) * dtype_size(dtype));
  return request;
}

std::unique_ptr<CommRequest> NcclCommunicator::reduce_scatter_async(const void* send, void* recv,
                                                                    size_t count_per_rank,
                                                                    DType dtype, ReduceOp op) {
  auto request = post_async(
      "reduce_scatter", "reduce_scatter of " + elements(count_per_rank, dtype) + " per rank",
      kCollectiveSuspects, reduce_scatter_call(send, recv, count_per_rank, dtype, op));
  stats_.add(CommOp::kReduceScatter,
             count_per_rank * static_cast<size_t>(size_) * dtype_size(dtype));
  return request;
}

// --- operations on the compute stream ------------------------------------------------------------

void NcclCommunicator::all_reduce(const void* send, void* recv, size_t count, DType dtype,
                                  ReduceOp op) {
  post("all_reduce", "all_reduce of " + elements(count, dtype), kCollectiveSuspects, stream_,
       all_reduce_call(send, recv, count, dtype, op));
  stats_.add(CommOp::kAllReduce, count * dtype_size(dtype));
}

void NcclCommunicator::all_gather(const void* send, void* recv, size_t count_per_rank,
                                  DType dtype) {
  post("all_gather", "all_gather of " + elements(count_per_rank, dtype) + " per rank",
       kCollectiveSuspects, stream_, all_gather_call(send, recv, count_per_rank, dtype));
  stats_.add(CommOp::kAllGather, count_per_rank * static_cast<size_t>(size_) * dtype_size(dtype));
}

void NcclCommunicator::reduce_scatter(const void* send, void* recv, size_t count_per_rank,
                                      DType dtype, ReduceOp op) {
  post("reduce_scatter", "reduce_scatter of " + elements(count_per_rank, dtype) + " per rank",
       kCollectiveSuspects, stream_, reduce_scatter_call(send, recv, count_per_rank, dtype, op));
  stats_.add(CommOp::kReduceScatter,
             count_per_rank * static_cast<size_t>(size_) * dtype_size(dtype));
}

void NcclCommunicator::broadcast(void* buffer, size_t count, DType dtype, int root) {
  check_usable("broadcast");
  LOOM_CHECK(root >= 0 && root < size_, "broadcast root", root, "is outside", describe());
  const ncclDataType_t type = nccl_dtype(dtype);
  post("broadcast", "broadcast of " + elements(count, dtype) + " from rank " + std::to_string(root),
       kCollectiveSuspects, stream_, [&](ncclComm_t comm, cudaStream_t stream) {
         return LOOM_NCCL_CALL(ncclBroadcast(buffer, buffer, count, type, root, comm, stream));
       });
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

namespace {

// What a batch of transfers is called in messages, and who may not have arrived.
struct BatchNames {
  std::string what;
  std::string suspects;
};

BatchNames batch_names(std::span<const P2POp> ops, const std::vector<int>& world_ranks,
                       int size, const std::string& group) {
  std::ostringstream what;
  std::ostringstream peers;
  what << (ops.size() == 1 ? "" : "send_recv_batch: ");
  for (size_t i = 0; i < ops.size(); ++i) {
    const P2POp& op = ops[i];
    const bool is_send = op.kind == P2POp::Kind::kSend;
    LOOM_CHECK(op.peer >= 0 && op.peer < size, is_send ? "send to" : "recv from", "rank", op.peer,
               "is outside", group);
    LOOM_CHECK(op.buffer != nullptr || op.count == 0, is_send ? "send" : "recv", "of", op.count,
               "elements has a null buffer");
    nccl_dtype(op.dtype);  // throws for a bad dtype here, not inside the NCCL group
    what << (i == 0 ? "" : ", ") << (is_send ? "send of " : "recv of ")
         << elements(op.count, op.dtype) << (is_send ? " to rank " : " from rank ") << op.peer
         << " (tag " << op.tag << ")";
    peers << (i == 0 ? "" : ", ") << world_ranks[static_cast<size_t>(op.peer)];
  }
  return {what.str(), (ops.size() == 1 ? "world rank " : "one of world ranks ") + peers.str() +
                          " did not post the matching operation"};
}

}  // namespace

void NcclCommunicator::send_recv_batch(std::span<const P2POp> ops) {
  check_usable("send_recv_batch");
  BatchNames names = batch_names(ops, world_ranks_, size_, describe());
  post("send_recv_batch", std::move(names.what), std::move(names.suspects), stream_,
       send_recv_call(ops));
  for (const P2POp& op : ops) {
    stats_.add(op.kind == P2POp::Kind::kSend ? CommOp::kSend : CommOp::kRecv,
               op.count * dtype_size(op.dtype));
  }
}

std::unique_ptr<CommRequest> NcclCommunicator::send_recv_batch_async(std::span<const P2POp> ops) {
  check_usable("send_recv_batch");
  BatchNames names = batch_names(ops, world_ranks_, size_, describe());
  auto request = post_async("send_recv_batch", std::move(names.what), std::move(names.suspects),
                            send_recv_call(ops));
  for (const P2POp& op : ops) {
    stats_.add(op.kind == P2POp::Kind::kSend ? CommOp::kSend : CommOp::kRecv,
               op.count * dtype_size(op.dtype));
  }
  return request;
}

// --- waiting on the host -------------------------------------------------------------------------

void NcclCommunicator::synchronize() { watchdog_->wait_all(); }

void NcclCommunicator::barrier() {
  // NCCL has no barrier: an all-reduce of one element waits for every rank just the same.
  post("barrier", "barrier", kCollectiveSuspects, stream_,
       [this](ncclComm_t comm, cudaStream_t stream) {
         return LOOM_NCCL_CALL(ncclAllReduce(barrier_scratch_, barrier_scratch_, 1, ncclFloat32,
                                             ncclSum, comm, stream));
       });
  stats_.add(CommOp::kBarrier, 0);
  watchdog_->wait_all();
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
      child_bootstrap_ref, std::move(child_bootstrap), device_, stream_, name, nccl_lock_));
  child->timeout_ = timeout_;
  const uint64_t sequence = ++operations_;
  const Clock::time_point deadline = deadline_after(timeout_);
  ncclConfig_t config = nccl_config(child->name_);
  NcclCall call;
  bool aborted = false;
  {
    std::lock_guard<std::mutex> lock(*nccl_lock_);
    aborted = comm_ == nullptr;
    if (!aborted) call = LOOM_NCCL_CALL(ncclCommSplit(comm_, color, key, &child->comm_, &config));
  }
  if (aborted) check_usable("split");
  const std::string what = "split into '" + name + "' (color " + std::to_string(color) + ", key " +
                           std::to_string(key) + ", operation #" + std::to_string(sequence) + ")";
  if (call_failed(call)) {
    child->abort();  // a half-made child is not finalized by its destructor
    fail(false, where(__FILE__, call.line, world_rank()) + ": " + call.statement + " failed for " +
                    what + " in " + describe() + ": " + nccl_error_text(call.status));
  }
  // The parent as well as the child is busy until the split completes.
  bool timed_out = false;
  const std::string error = wait_nccl({&comm_, &child->comm_}, deadline, timed_out);
  if (!error.empty()) {
    child->abort();
    check_usable("split");
    if (timed_out) {
      fail(true, str_cat(what, "in", describe(), "did not complete within", timeout_.count(),
                         "ms:", kCollectiveSuspects));
    }
    fail(false, str_cat(what, "failed in", describe() + ":", error));
  }
  child->finish_setup();
  return child;
}

}  // namespace loom::parallel
