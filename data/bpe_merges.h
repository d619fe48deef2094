// A BPE merge table and its application to one word, as GPT-2 defines it: while some adjacent
// pair of symbols has a merge, take the pair of lowest rank and merge every occurrence of it,
// left to right without overlap; stop when no adjacent pair has a merge.
//
// Symbols are token ids. Short words (nearly all) are merged by scanning every pair per step;
// long ones (a megabyte without a space) by a heap over a linked list, which is O(n log n)
// instead of O(n^2) and gives the same result even for merge tables whose ranks are not in the
// order training would produce.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace loom {

class BpeMerges {
 public:
  // Words longer than this many symbols take the heap path.
  static constexpr size_t kHeapThreshold = 48;

  // Makes (left, right) -> merged the merge of next rank (the ranks follow the order of the
  // calls). Returns false, changing nothing, when the pair has a merge already. `merged` must
  // differ from `left` and `right`.
  bool add(int32_t left, int32_t right, int32_t merged);
  size_t size() const { return size_; }

  // Merges `symbols` in place.
  void apply(std::vector<int32_t>& symbols) const {
    if (symbols.size() <= kHeapThreshold) {
      apply_by_scanning(symbols);
    } else {
      apply_by_heap(symbols);
    }
  }
  // The two ways, public so that a test can hold them against each other.
  void apply_by_scanning(std::vector<int32_t>& symbols) const;
  void apply_by_heap(std::vector<int32_t>& symbols) const;

 private:
  // An open-addressing table (linear probing, at most half full): the lookup of a pair is the
  // inner loop of encoding, and a flat array of 16-byte slots is several times faster there than
  // std::unordered_map's nodes.
  struct Slot {
    uint64_t key = kEmpty;
    uint32_t rank = 0;
    int32_t merged = 0;
  };
  using Merge = Slot;
  static constexpr uint64_t kEmpty = ~uint64_t{0};  // no pair of non-negative ids has this key

  static uint64_t key(int32_t left, int32_t right) {
    return static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32 | static_cast<uint32_t>(right);
  }
  size_t slot_of(uint64_t k) const { return static_cast<size_t>((k * 0x9E3779B97F4A7C15ull) >> shift_); }
  const Merge* find(int32_t left, int32_t right) const {
    if (slots_.empty()) return nullptr;
    const uint64_t k = key(left, right);
    for (size_t i = slot_of(k);; i = (i + 1) & (slots_.size() - 1)) {
      if (slots_[i].key == k) return &slots_[i];
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }
  void grow();

  std::vector<Slot> slots_;  // size a power of two
  int shift_ = 64;           // 64 - log2(slots_.size())
  size_t size_ = 0;
};

}  // namespace loom
