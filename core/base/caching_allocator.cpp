#include "core/base/caching_allocator.h"

#include "core/base/check.h"
#include "core/base/format.h"

namespace loom {

namespace {
constexpr size_t kSmallLimit = size_t{1} << 20;   // requests up to 1 MiB ...
constexpr size_t kSmallRound = 512;               // ... round to 512 B
constexpr size_t kLargeRound = size_t{2} << 20;   // larger ones to 2 MiB
}  // namespace

size_t CachingAllocator::rounded_size(size_t bytes) {
  const size_t unit = bytes <= kSmallLimit ? kSmallRound : kLargeRound;
  return (bytes + unit - 1) / unit * unit;
}

CachingAllocator::~CachingAllocator() {
  for (auto& [block, size] : in_use_) raw_.release(block);
  for (auto& [size, block] : cached_) raw_.release(block);
}

void* CachingAllocator::allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  ++stats_.requests;
  const size_t size = rounded_size(bytes);
  void* block = nullptr;
  size_t block_size = size;
  // The smallest cached block that fits, if it wastes at most a quarter of the request.
  auto it = cached_.lower_bound(size);
  if (it != cached_.end() && it->first <= size + size / 4) {
    block = it->second;
    block_size = it->first;
    cached_.erase(it);
    stats_.cached_bytes -= block_size;
  } else {
    block = raw_.allocate(size);
    if (block == nullptr && !cached_.empty()) {
      release_cached();
      block = raw_.allocate(size);
    }
    if (block == nullptr) {
      throw Error(str_cat("out of", device_name(raw_.device()), "memory: asked for",
                          format_bytes(bytes) + ";", format_bytes(stats_.in_use_bytes),
                          "in use, peak", format_bytes(stats_.peak_in_use_bytes) + ";",
                          "lower train.micro_batch_size or set train.recompute"));
    }
    ++stats_.raw_allocations;
  }
  in_use_.emplace(block, block_size);
  stats_.in_use_bytes += block_size;
  if (stats_.in_use_bytes > stats_.peak_in_use_bytes) stats_.peak_in_use_bytes = stats_.in_use_bytes;
  return block;
}

void CachingAllocator::free(void* block) {
  if (block == nullptr) return;
  auto it = in_use_.find(block);
  LOOM_CHECK(it != in_use_.end(), "free of a block this", device_name(raw_.device()),
             "allocator did not hand out");
  const size_t size = it->second;
  in_use_.erase(it);
  stats_.in_use_bytes -= size;
  cached_.emplace(size, block);
  stats_.cached_bytes += size;
}

void CachingAllocator::release_cached() {
  if (cached_.empty()) return;
  raw_.synchronize();
  for (auto& [size, block] : cached_) {
    raw_.release(block);
    ++stats_.raw_releases;
  }
  cached_.clear();
  stats_.cached_bytes = 0;
}

}  // namespace loom
