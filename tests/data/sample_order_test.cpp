#include "data/sample_order.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "data/token_data_util.h"
#include "test_util.h"

namespace loom {
namespace {

std::vector<uint64_t> images(const RandomPermutation& p) {
  std::vector<uint64_t> out(p.size());
  for (uint64_t i = 0; i < p.size(); ++i) out[i] = p(i);
  return out;
}

TEST(RandomPermutationTest, IsABijectionForEverySize) {
  for (uint64_t n : {1, 2, 3, 4, 5, 16, 17, 255, 1000, 4097, 65537, 100003}) {
    std::vector<uint64_t> got = images(RandomPermutation(n, 42, 7, 0));
    std::sort(got.begin(), got.end());
    std::vector<uint64_t> expected(n);
    std::iota(expected.begin(), expected.end(), 0);
    EXPECT_EQ(got, expected) << "n = " << n;
  }
}

TEST(RandomPermutationTest, KeyedBySeedStreamAndEpoch) {
  const uint64_t n = 10000;
  const std::vector<uint64_t> base = images(RandomPermutation(n, 42, 7, 0));
  EXPECT_EQ(images(RandomPermutation(n, 42, 7, 0)), base);
  for (const RandomPermutation& other :
       {RandomPermutation(n, 43, 7, 0), RandomPermutation(n, 42, 8, 0), RandomPermutation(n, 42, 7, 1)}) {
    const std::vector<uint64_t> got = images(other);
    size_t same = 0;
    for (uint64_t i = 0; i < n; ++i) same += got[i] == base[i];
    EXPECT_LT(same, 20u) << "positions where two keys agree (about 1 expected)";
  }
  size_t fixed = 0, ascending = 0;
  for (uint64_t i = 0; i < n; ++i) {
    fixed += base[i] == i;
    if (i > 0) ascending += base[i] > base[i - 1];
  }
  EXPECT_LT(fixed, 20u);
  EXPECT_NEAR(static_cast<double>(ascending) / static_cast<double>(n - 1), 0.5, 0.03);  // a shuffled order
}

TEST(SampleOrderTest, EveryWindowOncePerEpochInANewOrder) {
  const uint64_t S = 777;
  const SampleOrder order(5, {S}, {1.0}, true);
  EXPECT_EQ(order.windows(0), S);
  std::vector<uint64_t> epoch0, epoch1;
  for (uint64_t i = 0; i < 2 * S; ++i) {
    const SampleRef ref = order.at(i);
    EXPECT_EQ(ref.dataset, 0u);
    EXPECT_EQ(ref.epoch, i / S) << "sample " << i;
    (i < S ? epoch0 : epoch1).push_back(ref.window);
  }
  EXPECT_NE(epoch0, epoch1);
  std::sort(epoch0.begin(), epoch0.end());
  std::sort(epoch1.begin(), epoch1.end());
  std::vector<uint64_t> all(S);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(epoch0, all);
  EXPECT_EQ(epoch1, all);
}

TEST(SampleOrderTest, SameSeedSameOrderOtherSeedOtherOrder) {
  const SampleOrder a(5, {1000, 300}, {0.6, 0.4}, true), b(5, {1000, 300}, {0.6, 0.4}, true),
      c(6, {1000, 300}, {0.6, 0.4}, true);
  size_t same_as_c = 0;
  for (uint64_t i = 0; i < 5000; ++i) {
    const SampleRef x = a.at(i), y = b.at(i), z = c.at(i);
    ASSERT_EQ(x.dataset, y.dataset);
    ASSERT_EQ(x.window, y.window) << "sample " << i;
    EXPECT_EQ(x.dataset, z.dataset);  // the blend pattern does not depend on the seed
    same_as_c += x.window == z.window;
  }
  EXPECT_LT(same_as_c, 100u);
}

TEST(SampleOrderTest, UnshuffledOrderIsTheStream) {
  const SampleOrder order(5, {10}, {1.0}, false);
  for (uint64_t i = 0; i < 35; ++i) {
    EXPECT_EQ(order.at(i).window, i % 10);
    EXPECT_EQ(order.at(i).epoch, i / 10);
  }
}

TEST(SampleOrderTest, BlendMatchesTheWeightsExactlyPerBlockAndClosely) {
  const SampleOrder order(9, {5000, 1234}, {0.7, 0.3}, true);
  EXPECT_EQ(order.quota(0), 7000u);
  EXPECT_EQ(order.quota(1), 3000u);
  const uint64_t M = SampleOrder::kBlendBlock;
  for (uint64_t block : {0, 1, 17}) {
    uint64_t first = 0;
    for (uint64_t i = block * M; i < (block + 1) * M; ++i) first += order.at(i).dataset == 0;
    EXPECT_EQ(first, 7000u) << "block " << block;
  }
  // Any 10k-sample run, and every prefix of it, stays within 1% (here: within a few samples).
  uint64_t first = 0;
  double worst = 0;
  for (uint64_t i = 0; i < 10000; ++i) {
    first += order.at(123457 + i).dataset == 0;
    worst = std::max(worst, std::fabs(static_cast<double>(first) - 0.7 * static_cast<double>(i + 1)));
  }
  EXPECT_LE(worst, 2.0);
  EXPECT_NEAR(static_cast<double>(first) / 10000.0, 0.7, 0.01);
}

TEST(SampleOrderTest, EachBlendedDatasetRunsThroughItsOwnEpochs) {
  const uint64_t S0 = 300, S1 = 70;
  const SampleOrder order(3, {S0, S1}, {2.0, 1.0}, true);  // 6667 / 3333 per block
  std::vector<std::vector<std::set<uint64_t>>> seen(2);  // seen[k][epoch]: windows drawn
  std::vector<uint64_t> draws(2, 0);
  for (uint64_t i = 0; i < 3 * SampleOrder::kBlendBlock; ++i) {
    const SampleRef ref = order.at(i);
    const uint64_t S = ref.dataset == 0 ? S0 : S1;
    ASSERT_EQ(ref.epoch, draws[ref.dataset] / S) << "dataset " << ref.dataset << " draw " << draws[ref.dataset];
    ++draws[ref.dataset];
    auto& epochs = seen[ref.dataset];
    if (epochs.size() <= ref.epoch) epochs.resize(ref.epoch + 1);
    EXPECT_TRUE(epochs[ref.epoch].insert(ref.window).second)
        << "dataset " << ref.dataset << " window " << ref.window << " twice in epoch " << ref.epoch;
  }
  EXPECT_EQ(draws[0], 3u * 6667);
  EXPECT_EQ(draws[1], 3u * 3333);
  for (size_t k = 0; k < 2; ++k) {
    for (size_t e = 0; e + 1 < seen[k].size(); ++e) EXPECT_EQ(seen[k][e].size(), k == 0 ? S0 : S1);
  }
}

TEST(SampleOrderTest, ThreeWayQuotasAndBadWeights) {
  const SampleOrder order(1, {10, 10, 10}, {1, 1, 1}, true);
  EXPECT_EQ(order.quota(0) + order.quota(1) + order.quota(2), SampleOrder::kBlendBlock);
  EXPECT_EQ(order.quota(0), 3334u);
  std::string message = testing::user_error_of([] { SampleOrder(1, {10, 10}, {1.0, 1e-6}, true); });
  EXPECT_NE(message.find("below the blending resolution of 1 / 10000"), std::string::npos) << message;
  EXPECT_THROW(SampleOrder(1, {10, 10}, {1.0, -1.0}, true), UserError);
  EXPECT_THROW(SampleOrder(1, {10, 10}, {1.0, std::nan("")}, true), UserError);
}

}  // namespace
}  // namespace loom
