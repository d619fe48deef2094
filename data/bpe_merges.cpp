#include "data/bpe_merges.h"

#include <limits>
#include <queue>

#include "core/base/check.h"

namespace loom {

bool BpeMerges::add(int32_t left, int32_t right, int32_t merged) {
  // The heap path relies on this: a pair that contains the merged symbol is never the pair just
  // merged, so no merge of the current rank appears while its occurrences are being merged.
  LOOM_CHECK(merged != left && merged != right, "merge", left, right, "->", merged, "yields one of its parts");
  LOOM_CHECK(left >= 0 && right >= 0, "merge of ids", left, right, "(ids are non-negative)");
  if (find(left, right)) return false;
  if (2 * (size_ + 1) > slots_.size()) grow();
  const uint64_t k = key(left, right);
  size_t i = slot_of(k);
  while (slots_[i].key != kEmpty) i = (i + 1) & (slots_.size() - 1);
  slots_[i] = {k, static_cast<uint32_t>(size_++), merged};
  return true;
}

void BpeMerges::grow() {
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(old.empty() ? 64 : 2 * old.size(), Slot{});
  shift_ = 64;
  for (size_t n = slots_.size(); n > 1; n >>= 1) --shift_;
  for (const Slot& s : old) {
    if (s.key == kEmpty) continue;
    size_t i = slot_of(s.key);
    while (slots_[i].key != kEmpty) i = (i + 1) & (slots_.size() - 1);
    slots_[i] = s;
  }
}

void BpeMerges::apply_by_scanning(std::vector<int32_t>& symbols) const {
  while (symbols.size() > 1) {
    const Merge* best = nullptr;
    size_t first = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      const Merge* m = find(symbols[i], symbols[i + 1]);
      if (m && (!best || m->rank < best->rank)) {
        best = m;
        first = i;
      }
    }
    if (!best) return;
    // `first` is the leftmost occurrence (a later one has the same rank, not a lower one).
    const int32_t left = symbols[first], right = symbols[first + 1];
    size_t out = first;
    for (size_t i = first; i < symbols.size();) {
      if (i + 1 < symbols.size() && symbols[i] == left && symbols[i + 1] == right) {
        symbols[out++] = best->merged;
        i += 2;
      } else {
        symbols[out++] = symbols[i++];
      }
    }
    symbols.resize(out);
  }
}

void BpeMerges::apply_by_heap(std::vector<int32_t>& symbols) const {
  const size_t n = symbols.size();
  if (n < 2) return;
  constexpr size_t kNone = std::numeric_limits<size_t>::max();
  // Slot i holds a symbol until it is merged into its left neighbour; a merge keeps the left
  // slot, so slot 0 lives to the end and the list stays in text order.
  std::vector<int32_t> id(symbols);
  std::vector<size_t> prev(n), next(n);
  std::vector<unsigned char> alive(n, 1);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = i == 0 ? kNone : i - 1;
    next[i] = i + 1 == n ? kNone : i + 1;
  }
  struct Candidate {
    uint32_t rank;
    size_t slot;  // the pair's left symbol
    int32_t left, right;
  };
  // Lowest rank first, and within a rank (one pair) leftmost first.
  auto later = [](const Candidate& a, const Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.slot > b.slot;
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(later)> heap(later);
  auto push_pair_at = [&](size_t slot) {
    if (slot == kNone || next[slot] == kNone) return;
    if (const Merge* m = find(id[slot], id[next[slot]])) heap.push({m->rank, slot, id[slot], id[next[slot]]});
  };
  // A candidate goes stale when either of its symbols has been merged since it was pushed.
  auto current = [&](const Candidate& c) {
    return alive[c.slot] && id[c.slot] == c.left && next[c.slot] != kNone && id[next[c.slot]] == c.right;
  };
  for (size_t i = 0; i + 1 < n; ++i) push_pair_at(i);

  std::vector<Candidate> occurrences;
  while (!heap.empty()) {
    if (!current(heap.top())) {
      heap.pop();
      continue;
    }
    // Every occurrence of the lowest-ranked pair, merged left to right; an occurrence that
    // overlaps one merged before it in this pass is stale by then and skipped.
    const uint32_t rank = heap.top().rank;
    const int32_t merged = find(heap.top().left, heap.top().right)->merged;
    occurrences.clear();
    while (!heap.empty() && heap.top().rank == rank) {
      occurrences.push_back(heap.top());
      heap.pop();
    }
    for (const Candidate& c : occurrences) {
      if (!current(c)) continue;
      const size_t i = c.slot, j = next[c.slot];
      id[i] = merged;
      alive[j] = 0;
      next[i] = next[j];
      if (next[j] != kNone) prev[next[j]] = i;
      push_pair_at(prev[i]);
      push_pair_at(i);
    }
  }
  symbols.clear();
  for (size_t i = 0; i != kNone; i = next[i]) symbols.push_back(id[i]);
}

}  // namespace loom
