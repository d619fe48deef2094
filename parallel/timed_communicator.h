// A Communicator that forwards every call to another one and adds up the wall time the caller
// spent blocked in it (posting, and waiting for asynchronous requests), per operation kind, and in
// synchronize(). The benchmark wraps the process grid's groups with it to split a step into
// compute and communication. Bytes are counted, and timeouts kept, by the wrapped communicator;
// it is stream-ordered where the wrapped one is (then the time of a call is that of enqueueing it,
// and the waiting shows in synchronize()).
#pragma once

#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace loom::parallel {

class TimedCommunicator : public Communicator {
 public:
  explicit TimedCommunicator(Communicator& inner) : inner_(inner) {}

  // Seconds the caller was blocked in calls of kind `op`, in synchronize(), and in all calls.
  double seconds(CommOp op) const { return seconds_[static_cast<int>(op)]; }
  double synchronize_seconds() const { return synchronize_seconds_; }
  double total_seconds() const;
  void reset_time();
  void add_time(CommOp op, double seconds) { seconds_[static_cast<int>(op)] += seconds; }

  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  const std::string& name() const override { return inner_.name(); }
  int world_rank_of(int group_rank) const override { return inner_.world_rank_of(group_rank); }

  void all_reduce(const void* send, void* recv, size_t count, DType dtype, ReduceOp op) override;
  void all_gather(const void* send, void* recv, size_t count_per_rank, DType dtype) override;
  void reduce_scatter(const void* send, void* recv, size_t count_per_rank, DType dtype,
                      ReduceOp op) override;
  void broadcast(void* buffer, size_t count, DType dtype, int root) override;
  void send(const void* buffer, size_t count, DType dtype, int peer, int tag) override;
  void recv(void* buffer, size_t count, DType dtype, int peer, int tag) override;
  void send_recv_batch(std::span<const P2POp> ops) override;
  std::unique_ptr<CommRequest> send_recv_batch_async(std::span<const P2POp> ops) override;
  void barrier() override;
  std::unique_ptr<CommRequest> all_reduce_async(const void* send, void* recv, size_t count,
                                                DType dtype, ReduceOp op) override;
  std::unique_ptr<CommRequest> reduce_scatter_async(const void* send, void* recv,
                                                    size_t count_per_rank, DType dtype,
                                                    ReduceOp op) override;
  std::unique_ptr<CommRequest> all_gather_async(const void* send, void* recv,
                                                size_t count_per_rank, DType dtype) override;
  // Splits the wrapped communicator; the child is not timed.
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override;
  bool stream_ordered() const override { return inner_.stream_ordered(); }
  void synchronize() override;

 private:
  Communicator& inner_;
  double seconds_[static_cast<int>(CommOp::kCount)] = {};
  double synchronize_seconds_ = 0;
};

}  // namespace loom::parallel
