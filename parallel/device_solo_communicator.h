// A communicator of one rank on a GPU: SoloCommunicator's collectives, each a copy, where a copy
// whose source or destination is device memory is enqueued on the stream it was given
// (cudaMemcpyAsync, in stream order like an NCCL collective) and the call returns; host buffers
// are still copied at once. Split children share the stream. Part of the CUDA code
// (device_solo_communicator_cuda.cpp): a GPU run makes one for each group of one rank.
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <string>

#include "parallel/solo_communicator.h"

namespace loom::parallel {

class DeviceSoloCommunicator final : public SoloCommunicator {
 public:
  // `stream` is not owned and outlives the communicator and its children.
  explicit DeviceSoloCommunicator(cudaStream_t stream, std::string name = "solo")
      : SoloCommunicator(std::move(name)), stream_(stream) {}

  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override;

 protected:
  void copy_bytes(const void* send, void* recv, size_t bytes) const override;

 private:
  cudaStream_t stream_;
};

}  // namespace loom::parallel
