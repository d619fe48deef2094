#include "core/base/cuda/context.h"

#include "core/base/check.h"
#include "core/base/cuda/check.h"

namespace loom::cuda {

void* DeviceMemory::allocate(size_t bytes) {
  void* block = nullptr;
  const cudaError_t status = cudaMalloc(&block, bytes);
  if (status == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear the sticky-free error so that the retry and later calls see none
    return nullptr;
  }
  LOOM_CUDA_CHECK(status);
  return block;
}

void DeviceMemory::release(void* block) { LOOM_CUDA_CHECK(cudaFree(block)); }

void DeviceMemory::synchronize() {
  LOOM_CUDA_CHECK(cudaSetDevice(device_));
  LOOM_CUDA_CHECK(cudaDeviceSynchronize());
}

Event::Event(bool timing) {
  LOOM_CUDA_CHECK(cudaEventCreateWithFlags(&event_, timing ? cudaEventDefault : cudaEventDisableTiming));
}

Event::~Event() {
  if (event_ != nullptr) cudaEventDestroy(event_);
}

void Event::record(cudaStream_t stream) { LOOM_CUDA_CHECK(cudaEventRecord(event_, stream)); }

void Event::wait_on(cudaStream_t stream) const { LOOM_CUDA_CHECK(cudaStreamWaitEvent(stream, event_, 0)); }

void Event::synchronize() const { LOOM_CUDA_CHECK(cudaEventSynchronize(event_)); }

float Event::elapsed_ms_since(const Event& start) const {
  float ms = 0;
  LOOM_CUDA_CHECK(cudaEventElapsedTime(&ms, start.event_, event_));
  return ms;
}

Context::Context(int device) : device_(device), memory_(device) {
  int count = 0;
  LOOM_CUDA_CHECK(cudaGetDeviceCount(&count));
  LOOM_CHECK(device >= 0 && device < count, "CUDA device", device, "does not exist: this process sees",
             count);
  LOOM_CUDA_CHECK(cudaSetDevice(device));
  LOOM_CUDA_CHECK(cudaGetDeviceProperties(&properties_, device));
  LOOM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  allocator_ = std::make_unique<CachingAllocator>(memory_);
}

Context::~Context() {
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  allocator_.reset();  // its blocks go back before the stream does
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

void Context::synchronize() const { LOOM_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

}  // namespace loom::cuda
