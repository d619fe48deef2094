// DeviceSoloCommunicator: the one-rank group's copies in stream order on the GPU
// (device_solo_communicator.h).
#include "parallel/device_solo_communicator.h"

#include <cuda_runtime_api.h>

#include "core/base/cuda/check.h"

namespace loom::parallel {

namespace {

bool on_device(const void* p) {
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, p) != cudaSuccess) {
    (void)cudaGetLastError();  // not a pointer CUDA knows: host memory; clear the error it left
    return false;
  }
  return attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged;
}

}  // namespace

void DeviceSoloCommunicator::copy_bytes(const void* send, void* recv, size_t bytes) const {
  if (!on_device(send) && !on_device(recv)) {
    SoloCommunicator::copy_bytes(send, recv, bytes);
    return;
  }
  LOOM_CUDA_CHECK(cudaMemcpyAsync(recv, send, bytes, cudaMemcpyDefault, stream_));
}

std::unique_ptr<Communicator> DeviceSoloCommunicator::split(int, int, const std::string& name) {
  auto child = std::make_unique<DeviceSoloCommunicator>(stream_, name);
  child->set_timeout(timeout());
  return child;
}

}  // namespace loom::parallel
