// The NCCL implementation of Communicator: device buffers, one GPU per rank, stream-ordered
// (communicator.h): no call waits for its data.
//
// Created from a bootstrap communicator (MPI): rank 0 makes the ncclUniqueId and broadcasts it.
// The NCCL communicator is non-blocking, so that its initialisation and split can be given up on
// at the deadline; those two wait on the host, as barrier() does.
//
// Every other operation is enqueued and returns: the blocking ones on the compute stream given to
// create() (so the kernels queued after them see the result), the *_async ones on this
// communicator's own stream, made to wait for the compute stream's work so far (an event), so
// that a gradient reduction overlaps the backward; wait() makes the compute stream wait for it
// (an event again; the host never blocks). NCCL runs a communicator's operations in the order
// they were posted whatever their stream. A call waits on the host only where NCCL must first
// connect to its peers (the first operations of a group, answered ncclInProgress), and then no
// longer than the deadline.
//
// A Watchdog thread (parallel/watchdog.h), one per communicator, holds each operation's event,
// its deadline (posted + timeout()) and its description: the operation, its size, the group, this
// rank, world rank and host, its sequence number, and for point-to-point the peers that may not
// have arrived (NCCL cannot tell which peer of a collective is missing, so compare the operation
// numbers in the other ranks' messages). It polls the events and ncclCommGetAsyncError; at a
// deadline or an NCCL error it calls ncclCommAbort (NCCL's kernels then return, so the streams
// drain) and keeps the error, which the next call, any request's wait() and synchronize() throw
// (CommTimeout for a deadline, loom::Error for an NCCL error). After that the object is unusable.
// One thread per communicator keeps its lifetime that of the communicator (the destructor joins
// it before the ncclComm_t goes) and needs no state shared between communicators; a process has a
// handful of groups, and the thread sleeps while nothing is in flight.
//
// NCCL allows one thread at a time per communicator: every NCCL call, the watchdog's included,
// holds a lock shared by a communicator and the ones split from it.
//
// The bootstrap must outlive this communicator: split() splits the bootstrap in lockstep to learn
// the world ranks of the new group (the sub-communicator keeps its own split bootstrap).
// NCCL has no tags: messages between two ranks match in the order they are posted, so send/recv
// `tag`s are accepted for the interface but not compared.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/base/cuda/context.h"
#include "parallel/communicator.h"
#include "parallel/watchdog.h"

namespace loom::parallel {

class NcclCommunicator : public Communicator, private WatchdogTarget {
 public:
  // Collective over `bootstrap`: every rank calls it with its own device and compute stream. The
  // new communicator has the bootstrap's size, ranks, world ranks and timeout; `stream` is not
  // owned and must outlive it.
  static std::unique_ptr<NcclCommunicator> create(Communicator& bootstrap, int device,
                                                  cudaStream_t stream, const std::string& name);
  // Waits for the operations in flight (each to its deadline), then stops the watchdog and
  // finalizes NCCL (or aborts it, if that does not finish within the timeout). Reports nothing.
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  int world_rank_of(int group_rank) const override;

  void all_reduce(const void* send, void* recv, size_t count, DType dtype, ReduceOp op) override;
  void all_gather(const void* send, void* recv, size_t count_per_rank, DType dtype) override;
  void reduce_scatter(const void* send, void* recv, size_t count_per_rank, DType dtype,
                      ReduceOp op) override;
  std::unique_ptr<CommRequest> all_reduce_async(const void* send, void* recv, size_t count,
                                                DType dtype, ReduceOp op) override;
  std::unique_ptr<CommRequest> reduce_scatter_async(const void* send, void* recv,
                                                    size_t count_per_rank, DType dtype,
                                                    ReduceOp op) override;
  std::unique_ptr<CommRequest> all_gather_async(const void* send, void* recv, size_t count_per_rank,
                                                DType dtype) override;
  void broadcast(void* buffer, size_t count, DType dtype, int root) override;
  void send(const void* buffer, size_t count, DType dtype, int peer, int tag) override;
  void recv(void* buffer, size_t count, DType dtype, int peer, int tag) override;
  void send_recv_batch(std::span<const P2POp> ops) override;
  std::unique_ptr<CommRequest> send_recv_batch_async(std::span<const P2POp> ops) override;
  // Waits on the host until every rank has arrived (and every operation posted before it is done).
  void barrier() override;
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override;
  bool stream_ordered() const override { return true; }
  void synchronize() override;

  cudaStream_t stream() const { return stream_; }  // the compute stream
  cudaStream_t communication_stream() const { return communication_stream_; }
  int device() const { return device_; }

 private:
  class Request;  // the CommRequest of an *_async operation

  // Takes the group's shape from `bootstrap`; comm_ is set afterwards by create() or split(), so
  // that a failing initialisation is cleaned up by the destructor.
  NcclCommunicator(Communicator& bootstrap, std::unique_ptr<Communicator> owned_bootstrap,
                   int device, cudaStream_t stream, std::string name,
                   std::shared_ptr<std::mutex> nccl_lock);
  // After comm_ is ready: checks NCCL agrees on rank and size, allocates the barrier scratch and
  // the communication stream, starts the watchdog.
  void finish_setup();

  // Enqueues one operation on `stream`: `enqueue(comm, stream)` makes the NCCL call(s) under the
  // NCCL lock and returns the first that failed (or the last); then waits for NCCL to take it (only
  // while ncclInProgress), records an event after it and hands that to the watchdog; returns the
  // event. `what` names
  // the operation in messages, `suspects` who may not have arrived when it times out. The caller
  // counts the stats.
  template <typename Enqueue>
  std::shared_ptr<cuda::Event> post(const char* op, std::string what, std::string suspects,
                                    cudaStream_t stream, Enqueue&& enqueue);
  // post() on the communication stream, after the compute stream's work so far.
  template <typename Enqueue>
  std::unique_ptr<CommRequest> post_async(const char* op, std::string what, std::string suspects,
                                          Enqueue&& enqueue);

  // Throws if an earlier failure aborted this communicator.
  void check_usable(const char* op) const;
  // Until `deadline`, while any of `comms` answers ncclInProgress: init, split, finalize and an
  // enqueue that NCCL finishes in the background. "" once done, else what went wrong (and
  // `timed_out`).
  std::string wait_nccl(std::initializer_list<ncclComm_t*> comms,
                        std::chrono::steady_clock::time_point deadline, bool& timed_out);
  // Aborts (once) and throws: through the watchdog once it runs, so that the first failure wins.
  [[noreturn]] void fail(bool timeout, const std::string& message);
  // "NCCL group 'tp' (rank 1 of 4, world rank 5 on host h, device 0)"
  std::string describe() const;
  int world_rank() const { return world_ranks_[static_cast<size_t>(rank_)]; }

  // WatchdogTarget, on the watchdog's thread (abort() also on the caller's, from fail()).
  void enter_thread() override;
  std::string async_error() override;
  void abort() override;

  std::shared_ptr<std::mutex> nccl_lock_;  // held for every NCCL call on comm_
  ncclComm_t comm_ = nullptr;              // null once aborted (under nccl_lock_)
  Communicator& bootstrap_;
  std::unique_ptr<Communicator> owned_bootstrap_;  // set for communicators made by split()
  int device_ = 0;
  cudaStream_t stream_ = nullptr;                // the compute stream, not owned
  cudaStream_t communication_stream_ = nullptr;  // the *_async operations', owned
  std::unique_ptr<cuda::Event> compute_ready_;   // the compute stream's work before an async post
  std::string name_;
  int rank_ = 0;
  int size_ = 1;
  std::vector<int> world_ranks_;     // group rank -> world rank
  void* barrier_scratch_ = nullptr;  // one device float, all-reduced by barrier()
  uint64_t operations_ = 0;          // sequence number of the last operation, for messages
  std::unique_ptr<Watchdog> watchdog_;  // last: stopped before anything it uses goes
};

}  // namespace loom::parallel
