// Communicator: the one interface through which Loom's ranks exchange data.
//
// Two implementations: MPI (CPU buffers; also the bootstrap of everything else) and NCCL (GPU
// buffers, its unique id broadcast over MPI). Layers never call these collectives directly; they
// call the paired regions of parallel/regions.h, which are defined once with their backward.
//
// Every call has a deadline (timeout()): a peer that never arrives turns into CommTimeout (a loom::Error) naming
// the operation, the group and the rank(s) that did not arrive, instead of a hang. After such an
// error the communicator is unusable (the peers are in an unknown state) and the process should
// exit; launch/ does.
//
// Every call also counts its payload bytes in stats(), per operation kind, so that tests and the
// benchmark can compare the traffic of a step with the analytical volume of the layout
// (docs/parallelism.md). The convention: the bytes of the buffer this rank contributes
// (all_reduce: count elements; all_gather and reduce_scatter: count_per_rank * size elements;
// broadcast: count elements; send/recv: the message), whatever algorithm the library uses.
//
// All-reduce, all-gather and reduce-scatter also come asynchronous (`*_async`), so that the
// data-parallel gradient reduction can overlap the backward pass: the call posts the operation
// and returns a CommRequest; so do batches of point-to-point transfers (a pipeline stage sends
// its activations while it computes the next micro-batch). Ranks must post a group's collectives in the same order (blocking
// and asynchronous alike, as MPI requires); requests may be waited for in any order.
//
// Two kinds of communicator, told apart by stream_ordered():
// - Host-ordered (MPI, one-rank, staged through the host): a blocking call returns when the data
//   has moved; a request's wait() returns when its operation has completed. synchronize() does
//   nothing.
// - Stream-ordered (NCCL, on GPU buffers): every call, blocking or not, enqueues the operation on
//   the communicator's compute stream (the caller's, given when it was made) and returns before
//   the data has moved. The result is there for the work queued after the call on that stream,
//   and for the host only once it has synchronised that stream. A *_async operation runs on the
//   communicator's own stream, after the compute stream's work so far; its request's wait()
//   makes the compute stream wait for it, without blocking the host. Deadlines are kept by a
//   watchdog thread: a peer that never arrives, or an error of the library, aborts the group at
//   the deadline (its operations then return, with garbage), and the next call, a request's
//   wait() or synchronize() throws the error. So host code that reads a result, or writes a
//   buffer an operation may still use, first calls synchronize(): it returns once every
//   operation posted so far has completed, or throws why one did not; a stream synchronised
//   without it may hold garbage from an aborted operation. barrier() alone waits on the host
//   (it is a rendezvous of the ranks, not of data).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "core/base/check.h"
#include "core/base/dtype.h"

namespace loom::parallel {

// A peer did not arrive within the communicator's timeout (or an earlier timeout left the
// communicator unusable). The message names the operation, the group and the missing rank(s).
class CommTimeout : public Error {
 public:
  explicit CommTimeout(const std::string& message) : Error(message) {}
};

enum class ReduceOp : uint8_t { kSum = 0, kMax = 1 };

enum class CommOp : uint8_t {
  kAllReduce = 0,
  kAllGather,
  kReduceScatter,
  kBroadcast,
  kSend,
  kRecv,
  kBarrier,
  kCount  // number of kinds
};

const char* comm_op_name(CommOp op);

struct CommStats {
  uint64_t calls[static_cast<int>(CommOp::kCount)] = {};
  uint64_t bytes[static_cast<int>(CommOp::kCount)] = {};
  uint64_t total_bytes() const;
  void add(CommOp op, uint64_t nbytes);
  void reset() { *this = CommStats{}; }
};

// One point-to-point transfer in a batch (send_recv_batch): all are posted, then all awaited, so a
// pipeline stage can send its activations and receive the next ones without a deadlock.
struct P2POp {
  enum class Kind : uint8_t { kSend, kRecv } kind;
  void* buffer;  // const for sends
  size_t count;  // elements
  DType dtype;
  int peer;  // rank within this communicator
  int tag;
};

// A collective in flight. On a host-ordered communicator wait() returns when it completed, or
// throws loom::Error at the communicator's deadline (counted from when the operation was posted)
// naming the operation, the group and the missing rank(s), like the blocking calls. On a
// stream-ordered one wait() orders the compute stream after the operation and returns at once,
// throwing the communicator's error if it has one (the watchdog keeps the deadline). Destroying a
// request that was not waited for does what wait() does (never leaves an operation dangling
// silently); an error there is not reported, but leaves the communicator unusable, so the next
// call on it throws.
//
// Until it completes the operation may read its send buffer and write its receive buffer: both
// must stay alive and untouched until then (on a stream-ordered communicator: until wait(), and
// then only by work queued on the compute stream after it). A request must not outlive its
// communicator.
class CommRequest {
 public:
  virtual ~CommRequest() = default;
  virtual void wait() = 0;
  // true once complete (then wait() returns at once); never blocks. The deadline is enforced by
  // wait() (host-ordered) or the watchdog (stream-ordered), not by test().
  virtual bool test() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // The group's name in messages ("world", "tp", "dp", "pp", ...).
  virtual const std::string& name() const = 0;
  // This rank's rank in the world communicator, for messages naming a peer.
  virtual int world_rank_of(int group_rank) const = 0;

  // recv (count) = op over ranks of send (count). send == recv is in place.
  virtual void all_reduce(const void* send, void* recv, size_t count, DType dtype, ReduceOp op) = 0;
  // recv (size * count_per_rank) = concatenation in rank order of each rank's send (count_per_rank).
  virtual void all_gather(const void* send, void* recv, size_t count_per_rank, DType dtype) = 0;
  // recv (count_per_rank) = op over ranks of block `rank` of send (size * count_per_rank).
  virtual void reduce_scatter(const void* send, void* recv, size_t count_per_rank, DType dtype,
                              ReduceOp op) = 0;
  // The same operations posted without waiting: same buffers, counts, in-place rules and stats
  // (counted when posted); see CommRequest.
  virtual std::unique_ptr<CommRequest> all_reduce_async(const void* send, void* recv, size_t count,
                                                        DType dtype, ReduceOp op) = 0;
  virtual std::unique_ptr<CommRequest> reduce_scatter_async(const void* send, void* recv,
                                                            size_t count_per_rank, DType dtype,
                                                            ReduceOp op) = 0;
  virtual std::unique_ptr<CommRequest> all_gather_async(const void* send, void* recv,
                                                        size_t count_per_rank, DType dtype) = 0;

  // buffer (count) on every rank = buffer of `root`.
  virtual void broadcast(void* buffer, size_t count, DType dtype, int root) = 0;
  virtual void send(const void* buffer, size_t count, DType dtype, int peer, int tag) = 0;
  virtual void recv(void* buffer, size_t count, DType dtype, int peer, int tag) = 0;
  virtual void send_recv_batch(std::span<const P2POp> ops) = 0;
  // The batch posted without waiting (see CommRequest): a pipeline stage sends its output and
  // goes on computing. Point-to-point transfers between two ranks with the same tag are matched
  // in the order they were posted.
  virtual std::unique_ptr<CommRequest> send_recv_batch_async(std::span<const P2POp> ops) = 0;
  virtual void barrier() = 0;

  // A sub-communicator of the ranks that pass the same color, ordered by key (MPI_Comm_split's
  // meaning); every rank of this communicator must call it. `name` labels the new group, which
  // starts with this one's timeout.
  virtual std::unique_ptr<Communicator> split(int color, int key, const std::string& name) = 0;

  // true where calls return before the data has moved (see the top of this file).
  virtual bool stream_ordered() const { return false; }
  // Stream-ordered: blocks until every operation posted so far has completed (not the other work
  // on the stream), each bounded by its deadline, and throws the communicator's error if it has
  // one. Host-ordered: nothing to wait for.
  virtual void synchronize() {}

  std::chrono::milliseconds timeout() const { return timeout_; }
  void set_timeout(std::chrono::milliseconds timeout) { timeout_ = timeout; }
  CommStats& stats() { return stats_; }
  const CommStats& stats() const { return stats_; }

 protected:
  std::chrono::milliseconds timeout_{std::chrono::minutes(10)};
  CommStats stats_;
};

}  // namespace loom::parallel
