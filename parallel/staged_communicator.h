// A Communicator on GPU buffers that moves the data through host memory and another (MPI)
// communicator: the path for several processes that share one GPU (NCCL refuses two ranks on one
// device), and for MPI builds without GPU-aware transports.
//
// Each call waits for the work queued on `stream` (the buffers' producer), copies the send data
// to pinned host buffers, runs the wrapped communicator's operation on them, and copies the
// result back, synchronously: it is host-ordered (communicator.h). The *_async variants do the
// same and return a completed request: there is no overlap on this path. Bytes are counted, and
// timeouts kept, by the wrapped communicator. Only built with CUDA (staged_communicator_cuda.cpp).
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace loom::parallel {

class StagedCommunicator : public Communicator {
 public:
  // `inner` (host buffers) must outlive this communicator; `stream` is not owned.
  StagedCommunicator(Communicator& inner, cudaStream_t stream);
  ~StagedCommunicator() override;
  StagedCommunicator(const StagedCommunicator&) = delete;
  StagedCommunicator& operator=(const StagedCommunicator&) = delete;

  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  const std::string& name() const override { return inner_.name(); }
  int world_rank_of(int group_rank) const override { return inner_.world_rank_of(group_rank); }

  void all_reduce(const void* send, void* recv, size_t count, DType dtype, ReduceOp op) override;
  void all_gather(const void* send, void* recv, size_t count_per_rank, DType dtype) override;
  void reduce_scatter(const void* send, void* recv, size_t count_per_rank, DType dtype, ReduceOp op) override;
  std::unique_ptr<CommRequest> all_reduce_async(const void* send, void* recv, size_t count, DType dtype,
                                                ReduceOp op) override;
  std::unique_ptr<CommRequest> reduce_scatter_async(const void* send, void* recv, size_t count_per_rank,
                                                    DType dtype, ReduceOp op) override;
  std::unique_ptr<CommRequest> all_gather_async(const void* send, void* recv, size_t count_per_rank,
                                                DType dtype) override;
  void broadcast(void* buffer, size_t count, DType dtype, int root) override;
  void send(const void* buffer, size_t count, DType dtype, int peer, int tag) override;
  void recv(void* buffer, size_t count, DType dtype, int peer, int tag) override;
  void send_recv_batch(std::span<const P2POp> ops) override;
  std::unique_ptr<CommRequest> send_recv_batch_async(std::span<const P2POp> ops) override;
  void barrier() override { inner_.barrier(); }
  // Splits the wrapped communicator; the child stages through host memory too and owns its split.
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override;
  void synchronize() override { inner_.synchronize(); }

 private:
  struct HostBuffer {
    void* data = nullptr;
    size_t bytes = 0;
  };
  // A pinned host buffer of at least `bytes`, grown as needed.
  void* host(HostBuffer& buffer, size_t bytes);
  void to_host(void* dst, const void* device, size_t bytes);
  void to_device(void* device, const void* src, size_t bytes);

  std::unique_ptr<Communicator> owned_;  // the inner communicator, for split children
  Communicator& inner_;
  cudaStream_t stream_;
  HostBuffer send_, recv_;
  std::vector<HostBuffer> batch_;  // one per transfer of a send_recv_batch
};

}  // namespace loom::parallel
