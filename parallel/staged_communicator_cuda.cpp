#include "parallel/staged_communicator.h"

#include <vector>

#include "core/base/cuda/check.h"

namespace loom::parallel {

namespace {

class DoneRequest : public CommRequest {
 public:
  void wait() override {}
  bool test() override { return true; }
};

}  // namespace

StagedCommunicator::StagedCommunicator(Communicator& inner, cudaStream_t stream) : inner_(inner), stream_(stream) {
  timeout_ = inner.timeout();
}

StagedCommunicator::~StagedCommunicator() {
  for (HostBuffer* b : {&send_, &recv_}) {
    if (b->data != nullptr) cudaFreeHost(b->data);
  }
  for (HostBuffer& b : batch_) {
    if (b.data != nullptr) cudaFreeHost(b.data);
  }
}

void* StagedCommunicator::host(HostBuffer& buffer, size_t bytes) {
  if (buffer.bytes < bytes) {
    if (buffer.data != nullptr) LOOM_CUDA_CHECK(cudaFreeHost(buffer.data));
    buffer.data = nullptr;
    buffer.bytes = 0;
    LOOM_CUDA_CHECK(cudaMallocHost(&buffer.data, bytes));
    buffer.bytes = bytes;
  }
  return buffer.data;
}

void StagedCommunicator::to_host(void* dst, const void* device, size_t bytes) {
  if (bytes == 0) return;
  LOOM_CUDA_CHECK(cudaMemcpyAsync(dst, device, bytes, cudaMemcpyDeviceToHost, stream_));
  LOOM_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void StagedCommunicator::to_device(void* device, const void* src, size_t bytes) {
  if (bytes == 0) return;
  LOOM_CUDA_CHECK(cudaMemcpyAsync(device, src, bytes, cudaMemcpyHostToDevice, stream_));
  LOOM_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void StagedCommunicator::all_reduce(const void* send, void* recv, size_t count, DType dtype, ReduceOp op) {
  const size_t bytes = count * dtype_size(dtype);
  void* h = host(recv_, bytes);
  to_host(h, send, bytes);
  inner_.all_reduce(h, h, count, dtype, op);
  to_device(recv, h, bytes);
}

void StagedCommunicator::all_gather(const void* send, void* recv, size_t count_per_rank, DType dtype) {
  const size_t bytes = count_per_rank * dtype_size(dtype);
  void* hs = host(send_, bytes);
  void* hr = host(recv_, bytes * static_cast<size_t>(size()));
  to_host(hs, send, bytes);
  inner_.all_gather(hs, hr, count_per_rank, dtype);
  to_device(recv, hr, bytes * static_cast<size_t>(size()));
}

void StagedCommunicator::reduce_scatter(const void* send, void* recv, size_t count_per_rank, DType dtype,
                                        ReduceOp op) {
  const size_t bytes = count_per_rank * dtype_size(dtype);
  void* hs = host(send_, bytes * static_cast<size_t>(size()));
  void* hr = host(recv_, bytes);
  to_host(hs, send, bytes * static_cast<size_t>(size()));
  inner_.reduce_scatter(hs, hr, count_per_rank, dtype, op);
  to_device(recv, hr, bytes);
}

std::unique_ptr<CommRequest> StagedCommunicator::all_reduce_async(const void* send, void* recv, size_t count,
                                                                  DType dtype, ReduceOp op) {
  all_reduce(send, recv, count, dtype, op);
  return std::make_unique<DoneRequest>();
}

std::unique_ptr<CommRequest> StagedCommunicator::reduce_scatter_async(const void* send, void* recv,
                                                                      size_t count_per_rank, DType dtype,
                                                                      ReduceOp op) {
  reduce_scatter(send, recv, count_per_rank, dtype, op);
  return std::make_unique<DoneRequest>();
}

std::unique_ptr<CommRequest> StagedCommunicator::all_gather_async(const void* send, void* recv,
                                                                  size_t count_per_rank, DType dtype) {
  all_gather(send, recv, count_per_rank, dtype);
  return std::make_unique<DoneRequest>();
}

void StagedCommunicator::broadcast(void* buffer, size_t count, DType dtype, int root) {
  const size_t bytes = count * dtype_size(dtype);
  void* h = host(recv_, bytes);
  if (rank() == root) to_host(h, buffer, bytes);
  inner_.broadcast(h, count, dtype, root);
  if (rank() != root) to_device(buffer, h, bytes);
}

void StagedCommunicator::send(const void* buffer, size_t count, DType dtype, int peer, int tag) {
  const size_t bytes = count * dtype_size(dtype);
  void* h = host(send_, bytes);
  to_host(h, buffer, bytes);
  inner_.send(h, count, dtype, peer, tag);
}

void StagedCommunicator::recv(void* buffer, size_t count, DType dtype, int peer, int tag) {
  const size_t bytes = count * dtype_size(dtype);
  void* h = host(recv_, bytes);
  inner_.recv(h, count, dtype, peer, tag);
  to_device(buffer, h, bytes);
}

void StagedCommunicator::send_recv_batch(std::span<const P2POp> ops) {
  if (batch_.size() < ops.size()) batch_.resize(ops.size());
  std::vector<P2POp> staged(ops.begin(), ops.end());
  for (size_t i = 0; i < ops.size(); ++i) {
    const size_t bytes = ops[i].count * dtype_size(ops[i].dtype);
    staged[i].buffer = host(batch_[i], bytes);
    if (ops[i].kind == P2POp::Kind::kSend) to_host(staged[i].buffer, ops[i].buffer, bytes);
  }
  inner_.send_recv_batch(staged);
  for (size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].kind == P2POp::Kind::kRecv) {
      to_device(ops[i].buffer, staged[i].buffer, ops[i].count * dtype_size(ops[i].dtype));
    }
  }
}

std::unique_ptr<CommRequest> StagedCommunicator::send_recv_batch_async(std::span<const P2POp> ops) {
  send_recv_batch(ops);
  return std::make_unique<DoneRequest>();
}

std::unique_ptr<Communicator> StagedCommunicator::split(int color, int key, const std::string& name) {
  std::unique_ptr<Communicator> inner = inner_.split(color, key, name);
  auto child = std::make_unique<StagedCommunicator>(*inner, stream_);
  child->owned_ = std::move(inner);
  return child;
}

}  // namespace loom::parallel
