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
#include <unordered_map>
#include <vector>

namespace loom::data {

class BpeMerges {
 public:
  // Words longer than this many symbols take the heap path.
  static constexpr size_t kHeapThreshold = 48;

  // Makes (left, right) -> merged the merge of next rank (the ranks follow the order of the
  // calls). Returns false, changing nothing, when the pair has a merge already. `merged` must
  // differ from `left` and `right`.
  bool add(int32_t left, int32_t right, int32_t merged);
  size_t size() const { return merges_.size(); }

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
  struct Merge {
    uint32_t rank;
    int32_t merged;
  };
  static uint64_t key(int32_t left, int32_t right) {
    return static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32 | static_cast<uint32_t>(right);
  }
  const Merge* find(int32_t left, int32_t right) const {
    auto it = merges_.find(key(left, right));
    return it == merges_.end() ? nullptr : &it->second;
  }

  std::unordered_map<uint64_t, Merge> merges_;
};

}  // namespace loom::data
