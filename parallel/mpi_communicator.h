// The MPI implementation of Communicator: CPU buffers, and the bootstrap for everything else
// (the process grid's groups, NCCL's unique id).
//
// Collectives are posted non-blocking (MPI_Iallreduce, ...) and polled until they complete or the
// deadline passes. To name the peers that never arrived, every operation first posts a small
// "arrived at operation #n" notice to each peer on a duplicate communicator; on a timeout the
// ranks whose notice for #n is missing are the ones named in the error. The *_async collectives
// are numbered and announced when posted, and polled by CommRequest::wait().
#pragma once

#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace loom::parallel {

// MPI_Init_thread / MPI_Finalize for the lifetime of the object (one per process, in main).
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
};

class MpiCommunicator : public Communicator {
 public:
  // The world (MPI_COMM_WORLD duplicated); MPI must be initialised (MpiSession).
  static std::unique_ptr<MpiCommunicator> world();
  ~MpiCommunicator() override;

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
  // The ranks of this group that share this process's host (MPI_COMM_TYPE_SHARED: one shared-memory
  // node), ordered by their rank here. Collective.
  std::unique_ptr<Communicator> split_by_host(const std::string& name);

  MPI_Comm handle() const { return comm_; }

 private:
  MpiCommunicator(MPI_Comm comm, std::string name, std::vector<int> world_ranks);
  struct Impl;
  class Request;       // the CommRequest of an *_async collective
  class BatchRequest;  // the CommRequest of send_recv_batch_async
  std::unique_ptr<Impl> impl_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  std::string name_;
  int rank_ = 0;
  int size_ = 1;
  std::vector<int> world_ranks_;  // group rank -> world rank
};

}  // namespace loom::parallel
