// The caching allocator's policy, on host memory: reuse, rounding, bounded waste, release and
// retry when the memory is exhausted, the out-of-memory message, and a training-step-like pattern
// that stops asking the raw memory for blocks after its first iteration.
#include "core/base/caching_allocator.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <set>
#include <vector>

#include "core/tensor.h"

namespace loom {
namespace {

// malloc with a capacity, counting what it is asked.
class HostMemory final : public RawMemory {
 public:
  explicit HostMemory(size_t capacity) : capacity_(capacity) {}
  void* allocate(size_t bytes) override {
    if (used_ + bytes > capacity_) return nullptr;
    used_ += bytes;
    void* p = std::aligned_alloc(256, bytes);
    sizes_.emplace(p, bytes);
    return p;
  }
  void release(void* block) override {
    used_ -= sizes_.at(block);
    sizes_.erase(block);
    std::free(block);
  }
  void synchronize() override { ++synchronizations; }
  Device device() const override { return Device::kCUDA; }
  size_t used() const { return used_; }
  int synchronizations = 0;

 private:
  size_t capacity_;
  size_t used_ = 0;
  std::map<void*, size_t> sizes_;
};

TEST(CachingAllocatorTest, RoundsSmallTo512BytesAndLargeTo2MiB) {
  EXPECT_EQ(CachingAllocator::rounded_size(1), 512u);
  EXPECT_EQ(CachingAllocator::rounded_size(512), 512u);
  EXPECT_EQ(CachingAllocator::rounded_size(513), 1024u);
  EXPECT_EQ(CachingAllocator::rounded_size(size_t{1} << 20), size_t{1} << 20);
  EXPECT_EQ(CachingAllocator::rounded_size((size_t{1} << 20) + 1), size_t{2} << 20);
  EXPECT_EQ(CachingAllocator::rounded_size((size_t{5} << 20) + 7), size_t{6} << 20);
}

TEST(CachingAllocatorTest, ReusesAFreedBlockWithoutAskingTheRawMemory) {
  HostMemory raw(size_t{1} << 30);
  CachingAllocator allocator(raw);
  void* a = allocator.allocate(1000);
  allocator.free(a);
  void* b = allocator.allocate(900);  // the same 1024-byte class
  EXPECT_EQ(a, b);
  EXPECT_EQ(allocator.stats().raw_allocations, 1);
  EXPECT_EQ(allocator.stats().requests, 2);
  EXPECT_EQ(allocator.stats().in_use_bytes, 1024u);
  EXPECT_EQ(allocator.stats().cached_bytes, 0u);
  allocator.free(b);
  EXPECT_EQ(allocator.stats().cached_bytes, 1024u);
  EXPECT_EQ(allocator.allocate(0), nullptr);
  allocator.free(nullptr);
}

TEST(CachingAllocatorTest, ASmallRequestDoesNotTakeAMuchLargerBlock) {
  HostMemory raw(size_t{1} << 30);
  CachingAllocator allocator(raw);
  void* big = allocator.allocate(size_t{64} << 20);
  allocator.free(big);
  void* small = allocator.allocate(4096);
  EXPECT_NE(small, big);
  EXPECT_EQ(allocator.stats().raw_allocations, 2);
  // A request up to a quarter smaller than a cached block does take it.
  void* close = allocator.allocate(size_t{56} << 20);
  EXPECT_EQ(close, big);
}

TEST(CachingAllocatorTest, ATrainingStepPatternStopsAllocatingAfterTheFirstStep) {
  HostMemory raw(size_t{1} << 30);
  CachingAllocator allocator(raw);
  const std::vector<size_t> step_sizes = {3 << 20, 12345, 3 << 20, 777, size_t{40} << 20, 4096, 999};
  int64_t after_first = 0;
  for (int step = 0; step < 5; ++step) {
    std::vector<void*> live;
    for (size_t s : step_sizes) live.push_back(allocator.allocate(s));
    std::set<void*> distinct(live.begin(), live.end());
    EXPECT_EQ(distinct.size(), live.size()) << "two live requests got the same block";
    for (void* p : live) allocator.free(p);
    if (step == 0) after_first = allocator.stats().raw_allocations;
  }
  EXPECT_EQ(allocator.stats().raw_allocations, after_first);
  EXPECT_EQ(allocator.stats().raw_allocations, static_cast<int64_t>(step_sizes.size()));
  EXPECT_EQ(allocator.stats().in_use_bytes, 0u);
}

TEST(CachingAllocatorTest, ReleasesTheCacheAndRetriesWhenTheMemoryIsExhausted) {
  HostMemory raw(size_t{8} << 20);
  CachingAllocator allocator(raw);
  void* a = allocator.allocate(size_t{6} << 20);
  allocator.free(a);  // cached: 6 MiB of the 8 held
  void* b = allocator.allocate(size_t{4} << 20);  // does not fit beside it; the cache goes first
  EXPECT_NE(b, nullptr);
  EXPECT_EQ(raw.synchronizations, 1);
  EXPECT_EQ(allocator.stats().raw_releases, 1);
  EXPECT_EQ(allocator.stats().cached_bytes, 0u);
  EXPECT_EQ(raw.used(), size_t{4} << 20);
}

TEST(CachingAllocatorTest, OutOfMemorySaysWhatWasAskedAndWhatIsInUse) {
  HostMemory raw(size_t{8} << 20);
  CachingAllocator allocator(raw);
  void* a = allocator.allocate(size_t{6} << 20);
  try {
    allocator.allocate(size_t{4} << 20);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "out of cuda memory: asked for 4.0 MiB; 6.0 MiB in use, peak 6.0 MiB; lower "
                 "train.micro_batch_size or set train.recompute");
  }
  allocator.free(a);
}

TEST(CachingAllocatorTest, RejectsAForeignPointer) {
  HostMemory raw(size_t{1} << 20);
  CachingAllocator allocator(raw);
  int x = 0;
  EXPECT_THROW(allocator.free(&x), Error);
}

TEST(CachingAllocatorTest, TensorsReturnTheirBlocksWhenTheLastCopyGoes) {
  HostMemory raw(size_t{1} << 30);
  CachingAllocator allocator(raw);
  {
    Tensor t = Tensor::empty(Shape{256, 64}, DType::kBF16, allocator);
    EXPECT_EQ(t.device(), Device::kCUDA);
    EXPECT_EQ(t.nbytes(), 256u * 64 * 2);
    Tensor copy = t;
    Tensor rows = t.slice_rows(10, 20);
    t = Tensor();
    EXPECT_EQ(allocator.stats().in_use_bytes, CachingAllocator::rounded_size(256 * 64 * 2));
  }
  EXPECT_EQ(allocator.stats().in_use_bytes, 0u);
  EXPECT_EQ(allocator.stats().cached_bytes, CachingAllocator::rounded_size(256 * 64 * 2));
}

}  // namespace
}  // namespace loom
