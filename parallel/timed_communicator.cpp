#include "parallel/timed_communicator.h"

#include <chrono>

namespace loom::parallel {

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Adds the time its owner is blocked in wait() to the communicator's account.
class TimedRequest : public CommRequest {
 public:
  TimedRequest(TimedCommunicator& owner, CommOp op, std::unique_ptr<CommRequest> inner)
      : owner_(owner), op_(op), inner_(std::move(inner)) {}
  ~TimedRequest() override {
    const Clock::time_point start = Clock::now();
    inner_.reset();  // waits, as every request's destructor does
    owner_.add_time(op_, since(start));
  }
  void wait() override {
    const Clock::time_point start = Clock::now();
    inner_->wait();
    owner_.add_time(op_, since(start));
  }
  bool test() override { return inner_->test(); }

 private:
  TimedCommunicator& owner_;
  CommOp op_;
  std::unique_ptr<CommRequest> inner_;
};

}  // namespace

double TimedCommunicator::total_seconds() const {
  double total = synchronize_seconds_;
  for (double s : seconds_) total += s;
  return total;
}

void TimedCommunicator::reset_time() {
  for (double& s : seconds_) s = 0;
  synchronize_seconds_ = 0;
}

#define LOOM_TIMED(op, call)                    \
  const Clock::time_point start = Clock::now(); \
  call;                                         \
  add_time(op, since(start))

void TimedCommunicator::all_reduce(const void* send, void* recv, size_t count, DType dtype, ReduceOp op) {
  LOOM_TIMED(CommOp::kAllReduce, inner_.all_reduce(send, recv, count, dtype, op));
}

void TimedCommunicator::all_gather(const void* send, void* recv, size_t count_per_rank, DType dtype) {
  LOOM_TIMED(CommOp::kAllGather, inner_.all_gather(send, recv, count_per_rank, dtype));
}

void TimedCommunicator::reduce_scatter(const void* send, void* recv, size_t count_per_rank,
                                       DType dtype, ReduceOp op) {
  LOOM_TIMED(CommOp::kReduceScatter, inner_.reduce_scatter(send, recv, count_per_rank, dtype, op));
}

void TimedCommunicator::broadcast(void* buffer, size_t count, DType dtype, int root) {
  LOOM_TIMED(CommOp::kBroadcast, inner_.broadcast(buffer, count, dtype, root));
}

void TimedCommunicator::send(const void* buffer, size_t count, DType dtype, int peer, int tag) {
  LOOM_TIMED(CommOp::kSend, inner_.send(buffer, count, dtype, peer, tag));
}

void TimedCommunicator::recv(void* buffer, size_t count, DType dtype, int peer, int tag) {
  LOOM_TIMED(CommOp::kRecv, inner_.recv(buffer, count, dtype, peer, tag));
}

void TimedCommunicator::send_recv_batch(std::span<const P2POp> ops) {
  LOOM_TIMED(CommOp::kSend, inner_.send_recv_batch(ops));
}

std::unique_ptr<CommRequest> TimedCommunicator::send_recv_batch_async(std::span<const P2POp> ops) {
  std::unique_ptr<CommRequest> request;
  LOOM_TIMED(CommOp::kSend, request = inner_.send_recv_batch_async(ops));
  return std::make_unique<TimedRequest>(*this, CommOp::kSend, std::move(request));
}

void TimedCommunicator::barrier() { LOOM_TIMED(CommOp::kBarrier, inner_.barrier()); }

std::unique_ptr<CommRequest> TimedCommunicator::all_reduce_async(const void* send, void* recv,
                                                                 size_t count, DType dtype,
                                                                 ReduceOp op) {
  std::unique_ptr<CommRequest> request;
  LOOM_TIMED(CommOp::kAllReduce, request = inner_.all_reduce_async(send, recv, count, dtype, op));
  return std::make_unique<TimedRequest>(*this, CommOp::kAllReduce, std::move(request));
}

std::unique_ptr<CommRequest> TimedCommunicator::reduce_scatter_async(const void* send, void* recv,
                                                                     size_t count_per_rank,
                                                                     DType dtype, ReduceOp op) {
  std::unique_ptr<CommRequest> request;
  LOOM_TIMED(CommOp::kReduceScatter,
             request = inner_.reduce_scatter_async(send, recv, count_per_rank, dtype, op));
  return std::make_unique<TimedRequest>(*this, CommOp::kReduceScatter, std::move(request));
}

std::unique_ptr<CommRequest> TimedCommunicator::all_gather_async(const void* send, void* recv,
                                                                 size_t count_per_rank, DType dtype) {
  std::unique_ptr<CommRequest> request;
  LOOM_TIMED(CommOp::kAllGather, request = inner_.all_gather_async(send, recv, count_per_rank, dtype));
  return std::make_unique<TimedRequest>(*this, CommOp::kAllGather, std::move(request));
}

std::unique_ptr<Communicator> TimedCommunicator::split(int color, int key, const std::string& name) {
  return inner_.split(color, key, name);
}

void TimedCommunicator::synchronize() {
  const Clock::time_point start = Clock::now();
  inner_.synchronize();
  synchronize_seconds_ += since(start);
}

#undef LOOM_TIMED

}  // namespace loom::parallel
