// A caching allocator for device memory: after the first training step, no step asks the driver
// for memory (cudaMalloc synchronises the device and costs milliseconds).
//
// The policy is independent of CUDA so that the CPU build tests it: the allocator asks a
// RawMemory for blocks and keeps the blocks it is given back, keyed by size, for the next request
// of a size it can serve. Sizes are rounded (512 bytes below 1 MiB, 2 MiB above), and a cached
// block serves a request when it is at most a quarter larger than the rounded request, so that a
// small request does not pin a large block. When the raw memory is exhausted the cache is
// released (after the device finished with it) and the request retried once; if it still fails,
// loom::Error says how much was asked for, in use, cached and at the peak.
//
// One allocator serves one stream: a block freed while kernels that use it are still queued on
// that stream may be handed out again at once, because the next user's kernels queue behind them.
// Memory shared with another stream must stay allocated until that stream is done with it.
// Not thread-safe: one allocator per device context, used from its thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>

#include "core/base/dtype.h"

namespace loom {

// Where the blocks come from: cudaMalloc in a CUDA context, malloc in the tests.
class RawMemory {
 public:
  virtual ~RawMemory() = default;
  // nullptr when the memory is exhausted; other failures throw.
  virtual void* allocate(size_t bytes) = 0;
  virtual void release(void* block) = 0;
  // Waits until no queued work can touch released blocks (cudaDeviceSynchronize).
  virtual void synchronize() = 0;
  virtual Device device() const = 0;
};

struct AllocatorStats {
  int64_t requests = 0;         // allocate() calls
  int64_t raw_allocations = 0;  // blocks asked of the RawMemory
  int64_t raw_releases = 0;
  size_t in_use_bytes = 0;      // rounded bytes handed out and not freed
  size_t cached_bytes = 0;      // rounded bytes held for reuse
  size_t peak_in_use_bytes = 0;
};

class CachingAllocator {
 public:
  explicit CachingAllocator(RawMemory& raw) : raw_(raw) {}
  // Releases the cached blocks; blocks still in use are released too (their owners must be gone).
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // A block of at least `bytes` (nullptr for 0), 256-byte aligned if the raw memory is.
  void* allocate(size_t bytes);
  // Returns a block from allocate() to the cache; nullptr is ignored. Error for a foreign pointer.
  void free(void* block);
  // Gives every cached block back to the raw memory (after synchronize()).
  void release_cached();

  const AllocatorStats& stats() const { return stats_; }
  Device device() const { return raw_.device(); }
  // The size a request of `bytes` is served with.
  static size_t rounded_size(size_t bytes);

 private:
  RawMemory& raw_;
  std::multimap<size_t, void*> cached_;          // rounded size -> free block
  std::unordered_map<void*, size_t> in_use_;     // block -> rounded size
  AllocatorStats stats_;
};

}  // namespace loom
