// One process's GPU: the device it is bound to, the stream its work is queued on, the caching
// allocator for that stream, and events for ordering and timing.
//
// Every kernel launcher in kernels/cuda takes the stream explicitly; a Context is what the model,
// the optimizer and the tests pass around to get it (no global CUDA state in Loom). Constructing
// a Context makes its device current for the calling thread.
#pragma once

#include <cuda_runtime.h>

#include <memory>

#include "core/base/caching_allocator.h"

namespace loom::cuda {

// cudaMalloc / cudaFree for the caching allocator; out-of-memory answers nullptr.
class DeviceMemory final : public RawMemory {
 public:
  explicit DeviceMemory(int device) : device_(device) {}
  void* allocate(size_t bytes) override;
  void release(void* block) override;
  void synchronize() override;
  Device device() const override { return Device::kCUDA; }

 private:
  int device_;
};

class Event {
 public:
  // Timing events record timestamps (elapsed_ms); the others are cheaper, for ordering only.
  explicit Event(bool timing = false);
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record(cudaStream_t stream);
  // Makes `stream` wait (on the device) for the work before the last record().
  void wait_on(cudaStream_t stream) const;
  void synchronize() const;
  // Milliseconds from `start` to this event, both recorded and complete.
  float elapsed_ms_since(const Event& start) const;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

class Context {
 public:
  // Binds this thread to `device` and creates a non-blocking stream on it.
  explicit Context(int device);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  CachingAllocator& allocator() { return *allocator_; }
  const cudaDeviceProp& properties() const { return properties_; }
  // Waits for everything queued on the stream; surfaces asynchronous kernel faults as an Error.
  void synchronize() const;

 private:
  int device_;
  cudaStream_t stream_ = nullptr;
  cudaDeviceProp properties_{};
  DeviceMemory memory_;
  std::unique_ptr<CachingAllocator> allocator_;
};

}  // namespace loom::cuda
