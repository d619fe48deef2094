// The NCCL implementation of Communicator: device buffers, one CUDA stream, one GPU per rank.
//
// Created from a bootstrap communicator (MPI): rank 0 makes the ncclUniqueId and broadcasts it.
// Every operation is enqueued on the communicator's stream and then waited for, with the deadline
// timeout(), by polling the stream and NCCL's asynchronous error state (the communicator is
// created non-blocking, so even its initialisation can time out). On a timeout or an NCCL error
// the communicator is aborted (ncclCommAbort) and loom::Error names the operation, the group and
// this rank; NCCL cannot tell which peer did not arrive, so the message gives the operation's
// sequence number to compare with the other ranks' messages. After that the object is unusable.
//
// The bootstrap must outlive this communicator: split() splits the bootstrap in lockstep to learn
// the world ranks of the new group (the sub-communicator keeps its own split bootstrap).
// NCCL has no tags: messages between two ranks match in the order they are posted, so send/recv
// `tag`s are accepted for the interface but not compared.
//
// The *_async collectives are enqueued on the same stream, followed by a CUDA event; their
// request's wait() polls that event and NCCL's error state to the deadline (counted from the post)
// and aborts on a timeout as the blocking calls do. A blocking call drains the whole stream, so it
// also waits for the asynchronous operations posted before it.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace loom::parallel {

class NcclCommunicator : public Communicator {
 public:
  // Collective over `bootstrap`: every rank calls it with its own device and stream. The new
  // communicator has the bootstrap's size, ranks, world ranks and timeout; `stream` is not owned.
  static std::unique_ptr<NcclCommunicator> create(Communicator& bootstrap, int device,
                                                  cudaStream_t stream, const std::string& name);
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
  void barrier() override;
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override;

  ncclComm_t handle() const { return comm_; }
  cudaStream_t stream() const { return stream_; }
  int device() const { return device_; }

 private:
  // Takes the group's shape from `bootstrap`; comm_ is set afterwards by create() or split(), so
  // that a failing initialisation is cleaned up by the destructor.
  NcclCommunicator(Communicator& bootstrap, std::unique_ptr<Communicator> owned_bootstrap,
                   int device, cudaStream_t stream, std::string name);
  // After comm_ is ready: checks NCCL agrees on rank and size, allocates the barrier scratch.
  void finish_setup();

  class Request;  // the CommRequest of an *_async operation

  // Posts one asynchronous operation: `enqueue` makes the NCCL call(s) on stream_; an event is
  // recorded after it for the request to poll. `what` names the operation in messages,
  // `suspects` who may not have arrived when it times out. The caller counts the stats.
  template <typename Enqueue>
  std::unique_ptr<CommRequest> post_async(const char* op, std::string what, std::string suspects,
                                          Enqueue&& enqueue);

  // Throws if an earlier failure aborted this communicator.
  void check_usable(const char* op) const;
  // Waits, until the deadline, for NCCL to leave ncclInProgress and (if drain_stream) for the
  // stream to drain. On a timeout or an NCCL/CUDA error aborts the communicator and throws a
  // message naming `what` (the operation and its size) and, on a timeout, `suspects` (who may
  // not have arrived).
  void wait(const std::string& what, const std::string& suspects, bool drain_stream);
  // What wait() does, for any operation: polls NCCL's state and the device work (`stream`
  // drained, or `event` reached; with neither, NCCL's state alone) until `deadline`, and names
  // operation #`operation` and its `timeout` in the error.
  void await(const std::string& what, const std::string& suspects, uint64_t operation,
             std::chrono::milliseconds timeout, const cudaStream_t* stream, cudaEvent_t event,
             std::chrono::steady_clock::time_point deadline);
  // For the result of an enqueueing NCCL call: aborts and throws unless it succeeded.
  void check_enqueued(ncclResult_t status, const char* statement, const char* file, int line);
  [[noreturn]] void abort_and_throw(const std::string& message);
  std::string describe() const;  // "group 'tp' (rank 1 of 4, world rank 5, host h)"
  int world_rank() const { return world_ranks_[static_cast<size_t>(rank_)]; }

  ncclComm_t comm_ = nullptr;  // null once aborted
  Communicator& bootstrap_;
  std::unique_ptr<Communicator> owned_bootstrap_;  // set for communicators made by split()
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  std::string name_;
  int rank_ = 0;
  int size_ = 1;
  std::vector<int> world_ranks_;     // group rank -> world rank
  void* barrier_scratch_ = nullptr;  // one device float, all-reduced by barrier()
  uint64_t operations_ = 0;          // sequence number of the last operation, for messages
};

}  // namespace loom::parallel
