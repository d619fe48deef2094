// BPE merging: GPT-2's rule on small hand-checked words, and the heap path (long words) equal to
// the scanning path on random words and random merge tables, including rank orders that no
// training would produce.
#include "data/bpe_merges.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace loom {
namespace {

using Ids = std::vector<int32_t>;

Ids by_scanning(const BpeMerges& m, Ids w) {
  m.apply_by_scanning(w);
  return w;
}
Ids by_heap(const BpeMerges& m, Ids w) {
  m.apply_by_heap(w);
  return w;
}

TEST(BpeMergesTest, LowestRankFirstEveryOccurrenceLeftToRight) {
  enum : int32_t { a, b, c, ab, aa, abc, bc };
  BpeMerges m;
  EXPECT_TRUE(m.add(a, b, ab));    // rank 0
  EXPECT_TRUE(m.add(a, a, aa));    // rank 1
  EXPECT_TRUE(m.add(ab, c, abc));  // rank 2
  EXPECT_TRUE(m.add(b, c, bc));    // rank 3
  EXPECT_FALSE(m.add(a, b, c + 100)) << "a pair has one merge";
  EXPECT_EQ(m.size(), 4u);
  const std::pair<Ids, Ids> cases[] = {
      {{a, b, c}, {abc}},               // (a b) before (b c): rank 0 < rank 3
      {{a, a, a}, {aa, a}},             // left to right, no overlap
      {{a, a, a, a}, {aa, aa}},
      {{c, a, b, a, b, c}, {c, ab, abc}},
      {{b, c, a}, {bc, a}},
      {{c}, {c}},
      {{}, {}},
  };
  for (const auto& [word, expected] : cases) {
    EXPECT_EQ(by_scanning(m, word), expected);
    EXPECT_EQ(by_heap(m, word), expected);
  }
}

// A pair made by a merge may rank before the merge that made it. GPT-2's rule still merges every
// occurrence of the current pair first: x y x y -> xy xy, not xyx y.
TEST(BpeMergesTest, NewPairsOfLowerRankWaitForTheCurrentPairToFinish) {
  enum : int32_t { x, y, xy, xyx };
  BpeMerges m;
  m.add(xy, x, xyx);  // rank 0
  m.add(x, y, xy);    // rank 1
  EXPECT_EQ(by_scanning(m, {x, y, x, y}), (Ids{xy, xy}));
  EXPECT_EQ(by_heap(m, {x, y, x, y}), (Ids{xy, xy}));
  EXPECT_EQ(by_scanning(m, {x, y, x, y, x}), (Ids{xy, xyx}));  // then (xy x), which ranks first
  EXPECT_EQ(by_heap(m, {x, y, x, y, x}), (Ids{xy, xyx}));
  EXPECT_EQ(by_heap(m, {x, y, x}), (Ids{xyx}));
}

TEST(BpeMergesTest, HeapPathEqualsScanningOnRandomWordsAndTables) {
  std::mt19937 gen(1234);
  for (int table = 0; table < 20; ++table) {
    const int alphabet = 3 + table % 4;
    BpeMerges m;
    int32_t next_id = alphabet;
    std::vector<int32_t> symbols;
    for (int32_t s = 0; s < alphabet; ++s) symbols.push_back(s);
    // Merges over symbols made so far, added (ranked) in random order.
    for (int k = 0; k < 40; ++k) {
      std::uniform_int_distribution<size_t> pick(0, symbols.size() - 1);
      if (m.add(symbols[pick(gen)], symbols[pick(gen)], next_id)) symbols.push_back(next_id++);
    }
    std::uniform_int_distribution<int32_t> letter(0, alphabet - 1);
    std::uniform_int_distribution<size_t> length(0, 300);
    for (int w = 0; w < 200; ++w) {
      Ids word(length(gen));
      for (int32_t& s : word) s = letter(gen);
      const Ids expected = by_scanning(m, word);
      ASSERT_EQ(by_heap(m, word), expected) << "table " << table << " word " << w << " of " << word.size();
      Ids mixed = word;
      m.apply(mixed);
      ASSERT_EQ(mixed, expected);
    }
  }
}

}  // namespace
}  // namespace loom
