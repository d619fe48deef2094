// A communicator of one rank, without MPI: every collective is a copy. The single-process trainer
// and the tests of one rank use it, so that the tensor-parallel code path is the only path (with
// tp = 1 its regions reduce to copies and no-ops).
//
// Its buffers are host memory; DeviceSoloCommunicator (parallel/device_solo_communicator.h, part
// of the CUDA code) is the same group on a GPU, whose copies are enqueued on a stream.
#pragma once

#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace loom::parallel {

class SoloCommunicator : public Communicator {
 public:
  explicit SoloCommunicator(std::string name = "solo") : name_(std::move(name)) {}

  int rank() const override { return 0; }
  int size() const override { return 1; }
  const std::string& name() const override { return name_; }
  int world_rank_of(int group_rank) const override;

  void all_reduce(const void* send, void* recv, size_t count, DType dtype, ReduceOp op) override;
  void all_gather(const void* send, void* recv, size_t count_per_rank, DType dtype) override;
  void reduce_scatter(const void* send, void* recv, size_t count_per_rank, DType dtype,
                      ReduceOp op) override;
  // Copy at once: the request is complete when returned.
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
  void barrier() override {}
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override;

 protected:
  // What every collective of one rank does: `bytes` from `send` to `recv` (never the same).
  virtual void copy_bytes(const void* send, void* recv, size_t bytes) const;

 private:
  void copy(const void* send, void* recv, size_t count, DType dtype) const;

  std::string name_;
};

}  // namespace loom::parallel
