// MpiCommunicator: Communicator over MPI, with a deadline on every call.
//
// Each call posts its non-blocking MPI operation and polls it (MPI_Testall) until it completes or
// timeout() passes. Polling is polite: it spins for the first millisecond (a collective on a small
// buffer completes in microseconds; Open MPI's progress engine yields the core by itself when
// mpirun knows the node is oversubscribed), then yields, then sleeps 10 us doubling to 1 ms, so
// that 8 ranks on 2 cores leave the core to the peer they are waiting for.
//
// Arrival notices. Every rank of a group calls the group's collectives in the same order, so a
// collective has the same number #n everywhere. Before posting collective #n a rank sends the
// 8-byte value n to each peer (MPI_Isend) on a duplicate communicator, notice_comm, that carries
// nothing else. Each rank keeps one receive pre-posted per peer and collects what has arrived
// every 16 collectives and on a timeout; MPI does not reorder messages between one pair on one
// communicator, so the largest n received from a peer is the last collective it entered. On a
// timeout the peers whose notice for #n is missing are the ranks that never arrived. The cost is
// size-1 eager sends per collective (a few microseconds for groups of <= 8). Point-to-point calls
// involve one peer and are not numbered: the rank that never arrived is that peer.
//
// Asynchronous collectives. A collective is a Posted record (its MPI request, its number #n, its
// deadline) shared by the caller's CommRequest and the communicator's list of collectives in
// flight; a blocking call is a post followed at once by the wait. Posting counts the stats,
// announces #n and starts the MPI operation; wait() polls that one request to its deadline (MPI's
// progress engine advances every operation in flight meanwhile, so they may be waited for in any
// order), and on a timeout names the peers whose notice for #n is missing. Once one collective
// has timed out, the others still in flight are given up (abandoned) when waited for.
//
// After a timeout the communicator is broken: later calls throw, and the timed-out request is kept,
// never waited on. A timed-out receive is cancelled (MPI can cancel receives). A timed-out
// collective cannot be cancelled or freed (MPI forbids both): if the late rank arrives afterwards
// the collective still completes, and still writes the caller's receive buffer, which is one more
// reason the process should exit after such an error; the destructor gives abandoned requests a
// short grace period to complete, then leaks them rather than hang. MPI_Finalize does not wait for
// them. Collectives still in flight when the communicator is destroyed are abandoned the same way,
// and waiting for their requests afterwards throws.
#include "parallel/mpi_communicator.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <deque>
#include <optional>
#include <span>
#include <sstream>
#include <thread>
#include <utility>

#include "core/base/check.h"
#include "core/base/process.h"

namespace loom::parallel {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::microseconds;
using std::chrono::milliseconds;

constexpr int kNoticeTag = 0;
constexpr int kMaxTag = 32767;  // the smallest MPI_TAG_UB the standard allows
// Arrival notices received are collected every this many collectives (and on a timeout).
constexpr uint64_t kCollectEvery = 16;
// How long a destructor waits for notices and abandoned requests before it leaks them.
constexpr milliseconds kShutdownGrace{250};


[[noreturn]] void throw_mpi_error(int code, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  std::string reason = MPI_Error_string(code, text, &length) == MPI_SUCCESS
                           ? std::string(text, static_cast<size_t>(length))
                           : str_cat("MPI error code", code);
  std::ostringstream message;
  message << call << " failed: " << reason << " (" << this_process() << ")";
  throw Error(message.str(), std::string(file) + ":" + std::to_string(line));
}

inline void check_mpi(int code, const char* call, const char* file, int line) {
  if (code != MPI_SUCCESS) throw_mpi_error(code, call, file, line);
}

}  // namespace
}  // namespace loom::parallel

// Checks the return code of one MPI call; the message names the call, MPI's reason, file:line,
// the world rank and the host.
#define LOOM_MPI_CHECK(call) ::loom::parallel::check_mpi((call), #call, __FILE__, __LINE__)

namespace loom::parallel {
namespace {

MPI_Datatype mpi_type(DType dtype) {
  switch (dtype) {
    case DType::kF32: return MPI_FLOAT;
    case DType::kI32: return MPI_INT32_T;
    case DType::kF64: return MPI_DOUBLE;
    case DType::kBF16: return MPI_UINT16_T;  // raw bits; reduced by the operations below
  }
  LOOM_CHECK(false, "dtype", static_cast<int>(dtype), "has no MPI type");
  return MPI_DATATYPE_NULL;
}

// MPI has no bf16 type: bf16 travels as 16-bit integers and is reduced by these operations, in
// f32 with one rounding per pairwise step, as NCCL reduces bf16 (so bf16 activations pass
// through the tensor-parallel regions on CPU ranks as on GPUs).
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const bf16* a = static_cast<const bf16*>(in);
  bf16* b = static_cast<bf16*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = float_to_bf16(bf16_to_float(a[i]) + bf16_to_float(b[i]));
}

void bf16_max(void* in, void* inout, int* len, MPI_Datatype*) {
  const bf16* a = static_cast<const bf16*>(in);
  bf16* b = static_cast<bf16*>(inout);
  for (int i = 0; i < *len; ++i) {
    if (bf16_to_float(a[i]) > bf16_to_float(b[i])) b[i] = a[i];
  }
}

MPI_Op mpi_op(ReduceOp op, DType dtype) {
  if (dtype == DType::kBF16) {
    // Created once, after MPI_Init (the first reduction); MPI frees them at MPI_Finalize.
    static MPI_Op sum = MPI_OP_NULL, max = MPI_OP_NULL;
    if (sum == MPI_OP_NULL) {
      LOOM_MPI_CHECK(MPI_Op_create(&bf16_sum, /*commute=*/1, &sum));
      LOOM_MPI_CHECK(MPI_Op_create(&bf16_max, /*commute=*/1, &max));
    }
    return op == ReduceOp::kSum ? sum : max;
  }
  switch (op) {
    case ReduceOp::kSum: return MPI_SUM;
    case ReduceOp::kMax: return MPI_MAX;
  }
  LOOM_CHECK(false, "reduce op", static_cast<int>(op), "has no MPI operation");
  return MPI_OP_NULL;
}

int mpi_count(size_t count) {
  LOOM_CHECK(count <= static_cast<size_t>(INT_MAX), "count", count,
             "exceeds what one MPI call can move", INT_MAX);
  return static_cast<int>(count);
}

Clock::time_point deadline_after(milliseconds timeout) {
  const Clock::time_point now = Clock::now();
  if (timeout >= std::chrono::duration_cast<milliseconds>(Clock::time_point::max() - now)) {
    return Clock::time_point::max();
  }
  return now + timeout;
}

// Spin, then yield, then sleep: see the file comment.
class Backoff {
 public:
  void pause() {
    const Clock::duration waited = Clock::now() - start_;
    if (waited < kSpinPeriod) return;
    if (waited < kYieldPeriod) {
      std::this_thread::yield();
      return;
    }
    sleep_ = std::min(std::max(sleep_ * 2, microseconds(10)), microseconds(1000));
    std::this_thread::sleep_for(sleep_);
  }

 private:
  static constexpr microseconds kSpinPeriod{1000};
  static constexpr microseconds kYieldPeriod{5000};
  Clock::time_point start_ = Clock::now();
  microseconds sleep_{0};
};

// One MPI_Testall: true when every request has completed. An error in one transfer is reported
// with that transfer's own code (MPI_ERR_TRUNCATE, ...), not MPI_ERR_IN_STATUS.
bool test_all(std::span<MPI_Request> requests, std::vector<MPI_Status>* statuses) {
  MPI_Status* status_array = statuses ? statuses->data() : MPI_STATUSES_IGNORE;
  int done = 0;
  const int code = MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, status_array);
  if (code == MPI_ERR_IN_STATUS && statuses) {
    for (const MPI_Status& status : *statuses) {
      if (status.MPI_ERROR != MPI_SUCCESS && status.MPI_ERROR != MPI_ERR_PENDING) {
        throw_mpi_error(status.MPI_ERROR, "MPI_Testall (status of one transfer)", __FILE__,
                        __LINE__);
      }
    }
  }
  check_mpi(code, "MPI_Testall(n, requests.data(), &done, status_array)", __FILE__, __LINE__);
  return done != 0;
}

// Polls until every request has completed (true) or the deadline passes (false). MPI_Testall
// completes all or none, so on false every request is still pending.
bool poll_all(std::span<MPI_Request> requests, std::vector<MPI_Status>* statuses,
              Clock::time_point deadline) {
  Backoff backoff;
  while (true) {
    if (test_all(requests, statuses)) return true;
    if (Clock::now() >= deadline) return false;
    backoff.pause();
  }
}

std::string join_ranks(const std::vector<int>& ranks) {
  std::string out;
  for (size_t i = 0; i < ranks.size(); ++i) out += (i ? ", " : "") + std::to_string(ranks[i]);
  return out;
}

}  // namespace

struct MpiCommunicator::Impl {
  // One posted collective, shared by its CommRequest and by `in_flight` until it completes.
  struct Posted {
    MpiCommunicator* owner = nullptr;  // null once given up: then `failure` says why
    const char* op = "";
    uint64_t number = 0;  // #n of the arrival notices
    milliseconds timeout{0};
    Clock::time_point deadline;
    MPI_Request request = MPI_REQUEST_NULL;
    bool complete = false;
    std::string failure;  // why it will never complete; set when it was given up
  };

  struct OutgoingNotice {
    uint64_t op = 0;  // the buffer the sends read: kept alive until they complete
    std::vector<MPI_Request> requests;
  };

  MPI_Comm notice_comm = MPI_COMM_NULL;
  uint64_t op_count = 0;          // collectives this rank has entered on the group
  std::vector<uint64_t> arrived;  // group rank -> last collective it announced
  std::vector<uint64_t> inbox;    // group rank -> buffer of its pre-posted notice
  std::vector<MPI_Request> inbox_requests;
  std::deque<OutgoingNotice> outgoing;
  std::vector<std::shared_ptr<Posted>> in_flight;  // posted collectives not known complete
  std::vector<MPI_Request> abandoned_collectives;
  std::vector<MPI_Request> abandoned_sends;
  std::string broken;  // why the communicator is unusable; empty while it is healthy

  void start(const MpiCommunicator& self) {
    LOOM_MPI_CHECK(MPI_Comm_dup(self.comm_, &notice_comm));
    LOOM_MPI_CHECK(MPI_Comm_set_errhandler(notice_comm, MPI_ERRORS_RETURN));
    const size_t n = static_cast<size_t>(self.size_);
    arrived.assign(n, 0);
    inbox.assign(n, 0);
    inbox_requests.assign(n, MPI_REQUEST_NULL);
    for (int peer = 0; peer < self.size_; ++peer) {
      if (peer != self.rank_) post_notice_recv(peer);
    }
  }

  void post_notice_recv(int peer) {
    LOOM_MPI_CHECK(MPI_Irecv(&inbox[peer], 1, MPI_UINT64_T, peer, kNoticeTag, notice_comm,
                             &inbox_requests[peer]));
  }

  // Records every notice that has arrived and re-posts the receives. Each test that finds nothing
  // runs MPI's progress engine, which yields the core on an oversubscribed node: one MPI_Testsome
  // over all peers keeps that to one per call, and announce() calls this only every
  // kCollectEvery collectives.
  void collect_notices() {
    std::vector<int> completed(inbox_requests.size());
    while (true) {
      int n_completed = 0;
      LOOM_MPI_CHECK(MPI_Testsome(static_cast<int>(inbox_requests.size()), inbox_requests.data(),
                                  &n_completed, completed.data(), MPI_STATUSES_IGNORE));
      if (n_completed == MPI_UNDEFINED || n_completed == 0) return;
      for (int k = 0; k < n_completed; ++k) {
        const int peer = completed[k];
        arrived[peer] = std::max(arrived[peer], inbox[peer]);
        post_notice_recv(peer);
      }
    }
  }

  void retire_sent_notices() {
    while (!outgoing.empty()) {
      int done = 0;
      OutgoingNotice& oldest = outgoing.front();
      LOOM_MPI_CHECK(MPI_Testall(static_cast<int>(oldest.requests.size()), oldest.requests.data(),
                                 &done, MPI_STATUSES_IGNORE));
      if (!done) break;
      outgoing.pop_front();
    }
  }

  // Entering collective #n: tell every peer. Notices that pile up between two collections wait in
  // MPI's queue of unexpected messages: at most kCollectEvery per peer.
  void announce(const MpiCommunicator& self) {
    ++op_count;
    arrived[self.rank_] = op_count;
    if (self.size_ == 1) return;
    if (op_count % kCollectEvery == 0) {
      retire_sent_notices();
      collect_notices();
    }
    OutgoingNotice& notice = outgoing.emplace_back();
    notice.op = op_count;
    notice.requests.reserve(static_cast<size_t>(self.size_ - 1));
    for (int peer = 0; peer < self.size_; ++peer) {
      if (peer == self.rank_) continue;
      MPI_Request& request = notice.requests.emplace_back(MPI_REQUEST_NULL);
      LOOM_MPI_CHECK(
          MPI_Isend(&notice.op, 1, MPI_UINT64_T, peer, kNoticeTag, notice_comm, &request));
    }
  }

  std::string unusable_message(const MpiCommunicator& self, const char* op) const {
    return str_cat(op, "on group '" + self.name_ + "': unusable after an earlier timeout:", broken);
  }

  void check_usable(const MpiCommunicator& self, const char* op) const {
    if (broken.empty()) return;
    throw CommTimeout(unusable_message(self, op));
  }

  std::string timeout_message(const MpiCommunicator& self, const char* op, milliseconds timeout,
                              const std::vector<int>& missing_world_ranks,
                              const std::string& detail) const {
    std::ostringstream out;
    out << op << " on group '" << self.name_ << "' (rank " << self.rank_ << " of " << self.size_
        << ") timed out after " << timeout.count() << " ms: ";
    if (missing_world_ranks.empty()) {
      out << "every rank arrived but the operation did not complete";
    } else {
      out << "world rank(s) " << join_ranks(missing_world_ranks) << " never arrived";
    }
    out << " (" << detail << "; this is " << this_process() << ")";
    return out.str();
  }

  // Starts one collective: counts it in stats (when `kind` is given), announces #n, posts it
  // (`post` fills the request). The deadline runs from here.
  template <typename Post>
  std::shared_ptr<Posted> post_collective(MpiCommunicator& self, const char* op,
                                          std::optional<CommOp> kind, uint64_t nbytes,
                                          Post&& post) {
    check_usable(self, op);
    if (kind) self.stats_.add(*kind, nbytes);
    announce(self);
    auto posted = std::make_shared<Posted>();
    posted->owner = &self;
    posted->op = op;
    posted->number = op_count;
    posted->timeout = self.timeout_;
    posted->deadline = deadline_after(self.timeout_);
    post(&posted->request);
    in_flight.push_back(posted);
    return posted;
  }

  void forget(const Posted& posted) {
    std::erase_if(in_flight, [&](const std::shared_ptr<Posted>& p) { return p.get() == &posted; });
  }

  // Gives up on a collective that has not completed: MPI can neither cancel nor free it.
  void abandon(Posted& posted, const std::string& why) {
    abandoned_collectives.push_back(posted.request);
    posted.request = MPI_REQUEST_NULL;
    posted.owner = nullptr;
    posted.failure = why;
    forget(posted);
  }

  // Never blocks: whether the collective has completed.
  bool test_collective(Posted& posted) {
    if (posted.complete) return true;
    if (!posted.failure.empty()) throw CommTimeout(posted.failure);
    int done = 0;
    LOOM_MPI_CHECK(MPI_Test(&posted.request, &done, MPI_STATUS_IGNORE));
    if (done) {
      posted.complete = true;
      forget(posted);
    }
    return done != 0;
  }

  // Polls the collective to its deadline; on a timeout names the peers that never announced it,
  // and breaks the communicator.
  void wait_collective(MpiCommunicator& self, Posted& posted) {
    if (test_collective(posted)) return;
    if (!broken.empty()) {
      // Another collective timed out: its peers may never arrive at this one either.
      const std::string message = unusable_message(self, posted.op);
      abandon(posted, message);
      throw CommTimeout(message);
    }
    if (poll_all(std::span<MPI_Request>(&posted.request, 1), nullptr, posted.deadline)) {
      posted.complete = true;
      forget(posted);
      return;
    }

    collect_notices();
    std::vector<int> missing;
    for (int peer = 0; peer < self.size_; ++peer) {
      if (arrived[peer] < posted.number) missing.push_back(self.world_ranks_[peer]);
    }
    std::string message =
        timeout_message(self, posted.op, posted.timeout, missing,
                        "at collective #" + std::to_string(posted.number) + " of this group");
    broken = message;
    abandon(posted, message);
    throw CommTimeout(message);
  }

  // One blocking collective: post, then wait.
  template <typename Post>
  void run_collective(MpiCommunicator& self, const char* op, std::optional<CommOp> kind,
                      uint64_t nbytes, Post&& post) {
    const std::shared_ptr<Posted> posted =
        post_collective(self, op, kind, nbytes, std::forward<Post>(post));
    wait_collective(self, *posted);
  }

  // A batch of point-to-point transfers, posted together and awaited together; shared by its
  // CommRequest (send_recv_batch_async) or by the blocking call that waits for it at once.
  struct PostedBatch {
    const char* op = "";
    std::vector<P2POp> ops;
    std::vector<MPI_Request> requests;
    Clock::time_point deadline;
    bool complete = false;
    std::string failure;  // set when it timed out or was given up
  };

  std::shared_ptr<PostedBatch> post_p2p(MpiCommunicator& self, const char* op,
                                        std::span<const P2POp> ops) {
    check_usable(self, op);
    for (const P2POp& p : ops) {
      LOOM_CHECK(p.peer >= 0 && p.peer < self.size_, op, "peer", p.peer,
                 "is not a rank of group '" + self.name_ + "' of size", self.size_);
      LOOM_CHECK(p.buffer != nullptr || p.count == 0, op, "to/from peer", p.peer,
                 "has a null buffer for", p.count, "elements");
      LOOM_CHECK(p.tag >= 0 && p.tag <= kMaxTag, op, "tag", p.tag, "must lie in 0 ..", kMaxTag);
      mpi_count(p.count);
    }
    auto batch = std::make_shared<PostedBatch>();
    batch->op = op;
    batch->ops.assign(ops.begin(), ops.end());
    batch->requests.assign(ops.size(), MPI_REQUEST_NULL);
    batch->deadline = deadline_after(self.timeout_);
    for (size_t i = 0; i < ops.size(); ++i) {
      const P2POp& p = ops[i];
      const uint64_t nbytes = static_cast<uint64_t>(p.count) * dtype_size(p.dtype);
      if (p.kind == P2POp::Kind::kSend) {
        self.stats_.add(CommOp::kSend, nbytes);
        LOOM_MPI_CHECK(MPI_Isend(p.buffer, mpi_count(p.count), mpi_type(p.dtype), p.peer, p.tag,
                                 self.comm_, &batch->requests[i]));
      } else {
        self.stats_.add(CommOp::kRecv, nbytes);
        LOOM_MPI_CHECK(MPI_Irecv(p.buffer, mpi_count(p.count), mpi_type(p.dtype), p.peer, p.tag,
                                 self.comm_, &batch->requests[i]));
      }
    }
    return batch;
  }

  // Every receive got the element count it expected.
  void check_received(const MpiCommunicator& self, const PostedBatch& batch,
                      const std::vector<MPI_Status>& statuses) {
    for (size_t i = 0; i < batch.ops.size(); ++i) {
      const P2POp& p = batch.ops[i];
      if (p.kind != P2POp::Kind::kRecv) continue;
      int received = 0;
      LOOM_MPI_CHECK(MPI_Get_count(&statuses[i], mpi_type(p.dtype), &received));
      LOOM_CHECK(static_cast<size_t>(received) == p.count, batch.op,
                 "on group '" + self.name_ + "':", "expected", p.count, "elements from world rank",
                 self.world_ranks_[p.peer], "tag", p.tag, "but got", received);
    }
  }

  // Never blocks: whether every transfer of the batch has completed.
  bool test_p2p(const MpiCommunicator& self, PostedBatch& batch) {
    if (batch.complete) return true;
    if (!batch.failure.empty()) throw CommTimeout(batch.failure);
    std::vector<MPI_Status> statuses(batch.ops.size());
    if (!test_all(batch.requests, &statuses)) return false;
    batch.complete = true;
    check_received(self, batch, statuses);
    return true;
  }

  // Receives still pending are cancelled (MPI can cancel receives; the wait for a cancelled
  // receive is local); sends still pending are kept, never waited on.
  void give_up(PostedBatch& batch, const std::string& why) {
    for (size_t i = 0; i < batch.ops.size(); ++i) {
      MPI_Request& request = batch.requests[i];
      if (request == MPI_REQUEST_NULL) continue;
      if (batch.ops[i].kind == P2POp::Kind::kRecv) {
        MPI_Cancel(&request);
        MPI_Wait(&request, MPI_STATUS_IGNORE);
      } else {
        abandoned_sends.push_back(request);
        request = MPI_REQUEST_NULL;
      }
    }
    batch.failure = why;
  }

  // Polls the batch to its deadline; on a timeout names the peers of the transfers still
  // pending, and breaks the communicator.
  void wait_p2p(MpiCommunicator& self, PostedBatch& batch) {
    if (test_p2p(self, batch)) return;
    if (!broken.empty()) {
      const std::string message = unusable_message(self, batch.op);
      give_up(batch, message);
      throw CommTimeout(message);
    }
    std::vector<MPI_Status> statuses(batch.ops.size());
    if (poll_all(batch.requests, &statuses, batch.deadline)) {
      batch.complete = true;
      check_received(self, batch, statuses);
      return;
    }
    // Timed out: the peers of the transfers still pending never arrived.
    std::vector<int> missing;
    std::string pending;
    for (size_t i = 0; i < batch.ops.size(); ++i) {
      int done = 0;
      LOOM_MPI_CHECK(MPI_Test(&batch.requests[i], &done, MPI_STATUS_IGNORE));
      if (done) continue;
      const P2POp& p = batch.ops[i];
      const int world_peer = self.world_ranks_[p.peer];
      if (std::find(missing.begin(), missing.end(), world_peer) == missing.end()) {
        missing.push_back(world_peer);
      }
      pending += (pending.empty() ? "" : ", ") +
                 str_cat(p.kind == P2POp::Kind::kSend ? "send to" : "recv from", "world rank",
                         world_peer, "tag", p.tag);
    }
    std::string message =
        timeout_message(self, batch.op, self.timeout_, missing, "pending: " + pending);
    broken = message;
    give_up(batch, message);
    throw CommTimeout(message);
  }

  // Waits up to the grace period for what is still in flight, then lets go of it.
  void shut_down(const MpiCommunicator& self) {
    const Clock::time_point deadline = deadline_after(kShutdownGrace);
    // Requests outliving their communicator: nothing can complete them any more.
    while (!in_flight.empty()) {
      const std::shared_ptr<Posted> posted = in_flight.back();
      abandon(*posted, str_cat(posted->op, "on group '" + self.name_ +
                                               "': the communicator was destroyed before the "
                                               "request was waited for"));
    }
    if (broken.empty()) {
      // Every peer announced each collective this rank completed: receive those notices, so
      // that none is left in flight towards a freed communicator.
      Backoff backoff;
      while (true) {
        collect_notices();
        if (std::all_of(arrived.begin(), arrived.end(),
                        [&](uint64_t n) { return n >= op_count; }) ||
            Clock::now() >= deadline) {
          break;
        }
        backoff.pause();
      }
    } else {
      collect_notices();
    }
    for (MPI_Request& request : inbox_requests) {
      if (request == MPI_REQUEST_NULL) continue;
      MPI_Cancel(&request);
      MPI_Wait(&request, MPI_STATUS_IGNORE);
    }
    std::vector<MPI_Request> sends = std::move(abandoned_sends);
    for (OutgoingNotice& notice : outgoing) {
      sends.insert(sends.end(), notice.requests.begin(), notice.requests.end());
    }
    if (!poll_all(sends, nullptr, deadline)) {
      for (MPI_Request& request : sends) {
        if (request != MPI_REQUEST_NULL) MPI_Request_free(&request);  // the send goes on alone
      }
    }
    outgoing.clear();
    // MPI forbids freeing or cancelling a collective's request: leak it if it never completes.
    poll_all(abandoned_collectives, nullptr, deadline);
    abandoned_collectives.clear();
  }
};

// --- MpiSession ---------------------------------------------------------------------------------

MpiSession::MpiSession(int* argc, char*** argv) {
  int initialized = 0;
  LOOM_MPI_CHECK(MPI_Initialized(&initialized));
  LOOM_CHECK(!initialized,
             "MPI is already initialised: create one MpiSession per process, in main");
  int provided = 0;
  LOOM_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
  LOOM_CHECK(provided >= MPI_THREAD_FUNNELED, "MPI provides thread level", provided,
             "but Loom needs MPI_THREAD_FUNNELED", MPI_THREAD_FUNNELED);
  // Failures on the world itself come back as codes too, so they carry rank and host.
  LOOM_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

// --- MpiCommunicator ----------------------------------------------------------------------------

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name, std::vector<int> world_ranks)
    : impl_(std::make_unique<Impl>()),
      comm_(comm),
      name_(std::move(name)),
      world_ranks_(std::move(world_ranks)) {
  LOOM_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  LOOM_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  LOOM_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  LOOM_CHECK(static_cast<int>(world_ranks_.size()) == size_, "group '" + name_ + "' has", size_,
             "ranks but", world_ranks_.size(), "world ranks were given");
  impl_->start(*this);
}

namespace {

// group rank -> world rank of the ranks of `comm`.
std::vector<int> world_ranks_of(MPI_Comm comm) {
  int size = 0;
  LOOM_MPI_CHECK(MPI_Comm_size(comm, &size));
  MPI_Group group = MPI_GROUP_NULL;
  MPI_Group world_group = MPI_GROUP_NULL;
  LOOM_MPI_CHECK(MPI_Comm_group(comm, &group));
  LOOM_MPI_CHECK(MPI_Comm_group(MPI_COMM_WORLD, &world_group));
  std::vector<int> group_ranks(static_cast<size_t>(size));
  std::vector<int> world_ranks(static_cast<size_t>(size));
  for (int r = 0; r < size; ++r) group_ranks[r] = r;
  LOOM_MPI_CHECK(
      MPI_Group_translate_ranks(group, size, group_ranks.data(), world_group, world_ranks.data()));
  LOOM_MPI_CHECK(MPI_Group_free(&group));
  LOOM_MPI_CHECK(MPI_Group_free(&world_group));
  return world_ranks;
}

}  // namespace

std::unique_ptr<MpiCommunicator> MpiCommunicator::world() {
  int initialized = 0;
  LOOM_MPI_CHECK(MPI_Initialized(&initialized));
  LOOM_CHECK(initialized, "MPI is not initialised: create an MpiSession in main first");
  MPI_Comm comm = MPI_COMM_NULL;
  LOOM_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm));
  return std::unique_ptr<MpiCommunicator>(new MpiCommunicator(comm, "world", world_ranks_of(comm)));
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized || comm_ == MPI_COMM_NULL) return;  // nothing can be released any more
  try {
    impl_->shut_down(*this);
  } catch (const Error&) {
    // A failing MPI call while letting go: nothing more to release safely.
  }
  if (impl_->notice_comm != MPI_COMM_NULL) MPI_Comm_free(&impl_->notice_comm);
  MPI_Comm_free(&comm_);
}

int MpiCommunicator::world_rank_of(int group_rank) const {
  LOOM_CHECK(group_rank >= 0 && group_rank < size_, "rank", group_rank,
             "is not a rank of group '" + name_ + "' of size", size_);
  return world_ranks_[group_rank];
}

// --- asynchronous collectives ------------------------------------------------------------------

class MpiCommunicator::Request final : public CommRequest {
 public:
  explicit Request(std::shared_ptr<Impl::Posted> posted) : posted_(std::move(posted)) {}
  Request(const Request&) = delete;
  Request& operator=(const Request&) = delete;

  ~Request() override {
    try {
      wait();
    } catch (const Error&) {
      // A destructor cannot report; a timeout has left the communicator unusable, which the
      // next call on it reports.
    }
  }

  void wait() override {
    if (posted_->complete) return;
    if (posted_->owner == nullptr) throw CommTimeout(posted_->failure);
    posted_->owner->impl_->wait_collective(*posted_->owner, *posted_);
  }

  bool test() override {
    if (posted_->complete) return true;
    if (posted_->owner == nullptr) throw CommTimeout(posted_->failure);
    return posted_->owner->impl_->test_collective(*posted_);
  }

 private:
  std::shared_ptr<Impl::Posted> posted_;
};

std::unique_ptr<CommRequest> MpiCommunicator::all_reduce_async(const void* send, void* recv,
                                                               size_t count, DType dtype,
                                                               ReduceOp op) {
  LOOM_CHECK((send != nullptr && recv != nullptr) || count == 0, "all_reduce of", count,
             "elements on group '" + name_ + "' got a null buffer");
  const int n = mpi_count(count);
  const uint64_t nbytes = static_cast<uint64_t>(count) * dtype_size(dtype);
  const void* source = send == recv ? MPI_IN_PLACE : send;
  return std::make_unique<Request>(impl_->post_collective(
      *this, "all_reduce", CommOp::kAllReduce, nbytes, [&](MPI_Request* request) {
        LOOM_MPI_CHECK(
            MPI_Iallreduce(source, recv, n, mpi_type(dtype), mpi_op(op, dtype), comm_, request));
      }));
}

std::unique_ptr<CommRequest> MpiCommunicator::all_gather_async(const void* send, void* recv,
                                                               size_t count_per_rank,
                                                               DType dtype) {
  LOOM_CHECK((send != nullptr && recv != nullptr) || count_per_rank == 0, "all_gather of",
             count_per_rank, "elements per rank on group '" + name_ + "' got a null buffer");
  const int n = mpi_count(count_per_rank);
  mpi_count(count_per_rank * static_cast<size_t>(size_));
  const uint64_t nbytes = static_cast<uint64_t>(count_per_rank) * size_ * dtype_size(dtype);
  // send already in place as block `rank` of recv: MPI_IN_PLACE (MPI forbids aliasing otherwise).
  const size_t block_bytes = count_per_rank * dtype_size(dtype);
  const bool in_place =
      send == static_cast<const char*>(recv) + static_cast<size_t>(rank_) * block_bytes;
  const void* source = in_place ? MPI_IN_PLACE : send;
  return std::make_unique<Request>(impl_->post_collective(
      *this, "all_gather", CommOp::kAllGather, nbytes, [&](MPI_Request* request) {
        LOOM_MPI_CHECK(
            MPI_Iallgather(source, n, mpi_type(dtype), recv, n, mpi_type(dtype), comm_, request));
      }));
}

std::unique_ptr<CommRequest> MpiCommunicator::reduce_scatter_async(const void* send, void* recv,
                                                                   size_t count_per_rank,
                                                                   DType dtype, ReduceOp op) {
  LOOM_CHECK((send != nullptr && recv != nullptr) || count_per_rank == 0, "reduce_scatter of",
             count_per_rank, "elements per rank on group '" + name_ + "' got a null buffer");
  const int n = mpi_count(count_per_rank);
  mpi_count(count_per_rank * static_cast<size_t>(size_));
  const uint64_t nbytes = static_cast<uint64_t>(count_per_rank) * size_ * dtype_size(dtype);
  // send == recv: recv holds all size * count_per_rank inputs; the result lands in its first block.
  const void* source = send == recv ? MPI_IN_PLACE : send;
  return std::make_unique<Request>(impl_->post_collective(
      *this, "reduce_scatter", CommOp::kReduceScatter, nbytes, [&](MPI_Request* request) {
        LOOM_MPI_CHECK(MPI_Ireduce_scatter_block(source, recv, n, mpi_type(dtype), mpi_op(op, dtype),
                                                 comm_, request));
      }));
}

// --- blocking collectives ------------------------------------------------------------------------

void MpiCommunicator::all_reduce(const void* send, void* recv, size_t count, DType dtype,
                                 ReduceOp op) {
  all_reduce_async(send, recv, count, dtype, op)->wait();
}

void MpiCommunicator::all_gather(const void* send, void* recv, size_t count_per_rank, DType dtype) {
  all_gather_async(send, recv, count_per_rank, dtype)->wait();
}

void MpiCommunicator::reduce_scatter(const void* send, void* recv, size_t count_per_rank,
                                     DType dtype, ReduceOp op) {
  reduce_scatter_async(send, recv, count_per_rank, dtype, op)->wait();
}

void MpiCommunicator::broadcast(void* buffer, size_t count, DType dtype, int root) {
  LOOM_CHECK(root >= 0 && root < size_, "broadcast root", root,
             "is not a rank of group '" + name_ + "' of size", size_);
  LOOM_CHECK(buffer != nullptr || count == 0, "broadcast of", count,
             "elements on group '" + name_ + "' got a null buffer");
  const int n = mpi_count(count);
  const uint64_t nbytes = static_cast<uint64_t>(count) * dtype_size(dtype);
  impl_->run_collective(*this, "broadcast", CommOp::kBroadcast, nbytes, [&](MPI_Request* request) {
    LOOM_MPI_CHECK(MPI_Ibcast(buffer, n, mpi_type(dtype), root, comm_, request));
  });
}

void MpiCommunicator::send(const void* buffer, size_t count, DType dtype, int peer, int tag) {
  const P2POp op{P2POp::Kind::kSend, const_cast<void*>(buffer), count, dtype, peer, tag};
  impl_->wait_p2p(*this, *impl_->post_p2p(*this, "send", std::span<const P2POp>(&op, 1)));
}

void MpiCommunicator::recv(void* buffer, size_t count, DType dtype, int peer, int tag) {
  const P2POp op{P2POp::Kind::kRecv, buffer, count, dtype, peer, tag};
  impl_->wait_p2p(*this, *impl_->post_p2p(*this, "recv", std::span<const P2POp>(&op, 1)));
}

void MpiCommunicator::send_recv_batch(std::span<const P2POp> ops) {
  impl_->wait_p2p(*this, *impl_->post_p2p(*this, "send_recv_batch", ops));
}

class MpiCommunicator::BatchRequest final : public CommRequest {
 public:
  BatchRequest(MpiCommunicator& owner, std::shared_ptr<Impl::PostedBatch> batch)
      : owner_(owner), batch_(std::move(batch)) {}
  BatchRequest(const BatchRequest&) = delete;
  BatchRequest& operator=(const BatchRequest&) = delete;

  ~BatchRequest() override {
    try {
      wait();
    } catch (const Error&) {
      // As for collectives: the broken communicator reports at its next call.
    }
  }

  void wait() override { owner_.impl_->wait_p2p(owner_, *batch_); }
  bool test() override { return owner_.impl_->test_p2p(owner_, *batch_); }

 private:
  MpiCommunicator& owner_;
  std::shared_ptr<Impl::PostedBatch> batch_;
};

std::unique_ptr<CommRequest> MpiCommunicator::send_recv_batch_async(std::span<const P2POp> ops) {
  return std::make_unique<BatchRequest>(*this, impl_->post_p2p(*this, "send_recv_batch_async", ops));
}

void MpiCommunicator::barrier() {
  impl_->run_collective(*this, "barrier", CommOp::kBarrier, 0, [&](MPI_Request* request) {
    LOOM_MPI_CHECK(MPI_Ibarrier(comm_, request));
  });
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key, const std::string& name) {
  LOOM_CHECK(color >= 0, "split of group '" + name_ + "' into '" + name + "': color", color,
             "must be >= 0");
  // MPI_Comm_split blocks with no deadline: a timed barrier first turns a missing rank into an
  // error naming it. Not counted in stats(): it moves no payload.
  impl_->run_collective(*this, "split", std::nullopt, 0, [&](MPI_Request* request) {
    LOOM_MPI_CHECK(MPI_Ibarrier(comm_, request));
  });
  MPI_Comm comm = MPI_COMM_NULL;
  LOOM_MPI_CHECK(MPI_Comm_split(comm_, color, key, &comm));
  std::unique_ptr<Communicator> child(new MpiCommunicator(comm, name, world_ranks_of(comm)));
  child->set_timeout(timeout_);
  return child;
}

std::unique_ptr<Communicator> MpiCommunicator::split_by_host(const std::string& name) {
  // As in split(): a timed barrier first, since MPI_Comm_split_type has no deadline.
  impl_->run_collective(*this, "split_by_host", std::nullopt, 0, [&](MPI_Request* request) {
    LOOM_MPI_CHECK(MPI_Ibarrier(comm_, request));
  });
  MPI_Comm comm = MPI_COMM_NULL;
  LOOM_MPI_CHECK(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &comm));
  return std::unique_ptr<Communicator>(new MpiCommunicator(comm, name, world_ranks_of(comm)));
}

}  // namespace loom::parallel
