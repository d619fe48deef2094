// A communicator that ignores point-to-point tags, as NCCL does: every send and receive travels
// with tag 0, so messages between two ranks match in the order they were posted and nothing else.
// A pipeline schedule that runs correctly over it does not depend on tags (tests/core/
// gpt_parallel_mpitest.cpp runs the pipeline equivalence tests over it).
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace loom::testing {

class TaglessCommunicator final : public parallel::Communicator {
 public:
  explicit TaglessCommunicator(parallel::Communicator& inner) : inner_(inner) { set_timeout(inner.timeout()); }

  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  const std::string& name() const override { return inner_.name(); }
  int world_rank_of(int group_rank) const override { return inner_.world_rank_of(group_rank); }
  void all_reduce(const void* send, void* recv, size_t count, DType dtype, parallel::ReduceOp op) override {
    inner_.all_reduce(send, recv, count, dtype, op);
  }
  void all_gather(const void* send, void* recv, size_t count_per_rank, DType dtype) override {
    inner_.all_gather(send, recv, count_per_rank, dtype);
  }
  void reduce_scatter(const void* send, void* recv, size_t count_per_rank, DType dtype,
                      parallel::ReduceOp op) override {
    inner_.reduce_scatter(send, recv, count_per_rank, dtype, op);
  }
  std::unique_ptr<parallel::CommRequest> all_reduce_async(const void* send, void* recv, size_t count, DType dtype,
                                                          parallel::ReduceOp op) override {
    return inner_.all_reduce_async(send, recv, count, dtype, op);
  }
  std::unique_ptr<parallel::CommRequest> reduce_scatter_async(const void* send, void* recv, size_t count_per_rank,
                                                              DType dtype, parallel::ReduceOp op) override {
    return inner_.reduce_scatter_async(send, recv, count_per_rank, dtype, op);
  }
  std::unique_ptr<parallel::CommRequest> all_gather_async(const void* send, void* recv, size_t count_per_rank,
                                                          DType dtype) override {
    return inner_.all_gather_async(send, recv, count_per_rank, dtype);
  }
  void broadcast(void* buffer, size_t count, DType dtype, int root) override {
    inner_.broadcast(buffer, count, dtype, root);
  }
  void send(const void* buffer, size_t count, DType dtype, int peer, int) override {
    inner_.send(buffer, count, dtype, peer, 0);
  }
  void recv(void* buffer, size_t count, DType dtype, int peer, int) override {
    inner_.recv(buffer, count, dtype, peer, 0);
  }
  void send_recv_batch(std::span<const parallel::P2POp> ops) override {
    const std::vector<parallel::P2POp> untagged = without_tags(ops);
    inner_.send_recv_batch(untagged);
  }
  std::unique_ptr<parallel::CommRequest> send_recv_batch_async(std::span<const parallel::P2POp> ops) override {
    const std::vector<parallel::P2POp> untagged = without_tags(ops);
    return inner_.send_recv_batch_async(untagged);
  }
  void barrier() override { inner_.barrier(); }
  std::unique_ptr<parallel::Communicator> split(int color, int key, const std::string& group) override {
    return inner_.split(color, key, group);
  }
  bool stream_ordered() const override { return inner_.stream_ordered(); }
  void synchronize() override { inner_.synchronize(); }

 private:
  static std::vector<parallel::P2POp> without_tags(std::span<const parallel::P2POp> ops) {
    std::vector<parallel::P2POp> untagged(ops.begin(), ops.end());
    for (parallel::P2POp& op : untagged) op.tag = 0;
    return untagged;
  }

  parallel::Communicator& inner_;
};

}  // namespace loom::testing
