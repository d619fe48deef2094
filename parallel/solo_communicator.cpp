// SoloCommunicator: each collective of one rank is a copy, done when called (solo_communicator.h).
#include "parallel/solo_communicator.h"

#include <cstring>

#include "core/base/check.h"

namespace loom::parallel {

namespace {

class CompletedRequest final : public CommRequest {
 public:
  void wait() override {}
  bool test() override { return true; }
};

}  // namespace

void SoloCommunicator::copy(const void* send, void* recv, size_t count, DType dtype) const {
  if (send == recv || count == 0) return;
  copy_bytes(send, recv, count * dtype_size(dtype));
}

void SoloCommunicator::copy_bytes(const void* send, void* recv, size_t bytes) const { std::memcpy(recv, send, bytes); }

int SoloCommunicator::world_rank_of(int group_rank) const {
  LOOM_CHECK(group_rank == 0, "rank", group_rank, "in a one-rank group");
  return 0;
}

void SoloCommunicator::all_reduce(const void* send, void* recv, size_t count, DType dtype, ReduceOp) {
  copy(send, recv, count, dtype);
  stats_.add(CommOp::kAllReduce, count * dtype_size(dtype));
}

void SoloCommunicator::all_gather(const void* send, void* recv, size_t count_per_rank, DType dtype) {
  copy(send, recv, count_per_rank, dtype);
  stats_.add(CommOp::kAllGather, count_per_rank * dtype_size(dtype));
}

void SoloCommunicator::reduce_scatter(const void* send, void* recv, size_t count_per_rank,
                                      DType dtype, ReduceOp) {
  copy(send, recv, count_per_rank, dtype);
  stats_.add(CommOp::kReduceScatter, count_per_rank * dtype_size(dtype));
}

std::unique_ptr<CommRequest> SoloCommunicator::all_reduce_async(const void* send, void* recv,
                                                                size_t count, DType dtype,
                                                                ReduceOp op) {
  all_reduce(send, recv, count, dtype, op);
  return std::make_unique<CompletedRequest>();
}

std::unique_ptr<CommRequest> SoloCommunicator::all_gather_async(const void* send, void* recv,
                                                                size_t count_per_rank,
                                                                DType dtype) {
  all_gather(send, recv, count_per_rank, dtype);
  return std::make_unique<CompletedRequest>();
}

std::unique_ptr<CommRequest> SoloCommunicator::reduce_scatter_async(const void* send, void* recv,
                                                                    size_t count_per_rank,
                                                                    DType dtype, ReduceOp op) {
  reduce_scatter(send, recv, count_per_rank, dtype, op);
  return std::make_unique<CompletedRequest>();
}

void SoloCommunicator::broadcast(void*, size_t count, DType dtype, int root) {
  LOOM_CHECK(root == 0, "broadcast root", root, "in a one-rank group");
  stats_.add(CommOp::kBroadcast, count * dtype_size(dtype));
}

void SoloCommunicator::send(const void*, size_t, DType, int peer, int) {
  LOOM_CHECK(false, "send to peer", peer, "in the one-rank group", name_, ": nobody can receive it");
}

void SoloCommunicator::recv(void*, size_t, DType, int peer, int) {
  LOOM_CHECK(false, "recv from peer", peer, "in the one-rank group", name_, ": nobody can send it");
}

void SoloCommunicator::send_recv_batch(std::span<const P2POp> ops) {
  LOOM_CHECK(ops.empty(), "point-to-point transfers in the one-rank group", name_);
}

std::unique_ptr<CommRequest> SoloCommunicator::send_recv_batch_async(std::span<const P2POp> ops) {
  send_recv_batch(ops);
  return std::make_unique<CompletedRequest>();
}

std::unique_ptr<Communicator> SoloCommunicator::split(int, int, const std::string& name) {
  auto child = std::make_unique<SoloCommunicator>(name);
  child->set_timeout(timeout_);
  return child;
}

}  // namespace loom::parallel
