#include "core/rng.h"

#include <cmath>
#include <vector>

#include "test_util.h"

namespace loom {
namespace {

// Known-answer values of Philox4x32-10 from the Random123 distribution's kat_vectors.
TEST(RngTest, Philox4x32MatchesPublishedVectors) {
  auto zero = philox4x32({0, 0, 0, 0}, {0, 0});
  EXPECT_EQ(zero[0], 0x6627e8d5u);
  EXPECT_EQ(zero[1], 0xe169c58du);
  EXPECT_EQ(zero[2], 0xbc57ac4cu);
  EXPECT_EQ(zero[3], 0x9b00dbd8u);
  auto ones = philox4x32({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu});
  EXPECT_EQ(ones[0], 0x408f276du);
  EXPECT_EQ(ones[1], 0x41c83b0eu);
  EXPECT_EQ(ones[2], 0xa20bc7c6u);
  EXPECT_EQ(ones[3], 0x6d5451fdu);
}

// The property the parallel layouts rely on: a shard that starts at global element `first`
// gets exactly the values the full tensor has there.
TEST(RngTest, ShardOfATensorEqualsTheSliceOfTheWholeTensor) {
  CounterRng rng(1234, stream_id_of("h.0.mlp.c_fc.weight"));
  std::vector<float> whole(1000);
  fill_normal(whole.data(), 1000, 0, rng, 0.0f, 0.02f);
  std::vector<float> shard(250);
  fill_normal(shard.data(), 250, 500, rng, 0.0f, 0.02f);
  for (int i = 0; i < 250; ++i) ASSERT_EQ(shard[static_cast<size_t>(i)], whole[static_cast<size_t>(500 + i)]) << "index " << i;
}

TEST(RngTest, NormalHasTheRightMomentsAndStreamsDiffer) {
  CounterRng a(1, 1), b(1, 2), c(2, 1);
  const int n = 200000;
  double sum = 0, sum_sq = 0;
  int same_ab = 0, same_ac = 0;
  for (int i = 0; i < n; ++i) {
    double x = a.normal(static_cast<uint64_t>(i));
    sum += x;
    sum_sq += x * x;
    same_ab += a.normal(static_cast<uint64_t>(i)) == b.normal(static_cast<uint64_t>(i));
    same_ac += a.normal(static_cast<uint64_t>(i)) == c.normal(static_cast<uint64_t>(i));
  }
  const double mean = sum / n, var = sum_sq / n - mean * mean;
  EXPECT_NEAR(mean, 0.0, 0.01);
  EXPECT_NEAR(var, 1.0, 0.01);
  EXPECT_LT(same_ab, 5);
  EXPECT_LT(same_ac, 5);
  for (int i = 0; i < 1000; ++i) {
    float u = a.uniform(static_cast<uint64_t>(i));
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
  }
}

}  // namespace
}  // namespace loom
