// Tests for fused softmax + cross-entropy against a double-precision reference, including ignored
// rows, in-place backward, very large logits and target validation.
//
// Tolerances: float max/sum with a ~2 ulp exp over up to ~50k terms: losses at rtol 1e-5,
// atol 1e-5; gradients (probabilities <= 1, times dloss <= 1) at rtol 1e-4, atol 1e-6.
#include "kernels/cpu/cross_entropy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/base/check.h"
#include "test_util.h"

namespace loom::kernels::cpu {
namespace {

using loom::testing::all_close;
using loom::testing::poisoned;
using loom::testing::random_floats;
using loom::testing::random_ints;

// losses (N) and dlogits (N, V) in double.
void reference_cross_entropy(const std::vector<float>& logits, const std::vector<int32_t>& targets,
                             const std::vector<float>& dlosses, int N, int V,
                             std::vector<double>* losses, std::vector<double>* dlogits) {
  losses->assign(N, 0.0);
  dlogits->assign(static_cast<size_t>(N) * V, 0.0);
  for (int n = 0; n < N; ++n) {
    if (targets[n] == kIgnoreTarget) continue;
    const float* x = logits.data() + static_cast<size_t>(n) * V;
    double max = x[0];
    for (int j = 1; j < V; ++j) max = std::max(max, static_cast<double>(x[j]));
    double sum = 0;
    for (int j = 0; j < V; ++j) sum += std::exp(x[j] - max);
    (*losses)[n] = max + std::log(sum) - x[targets[n]];
    for (int j = 0; j < V; ++j) {
      const double p = std::exp(x[j] - max) / sum;
      (*dlogits)[static_cast<size_t>(n) * V + j] = dlosses[n] * (p - (j == targets[n] ? 1 : 0));
    }
  }
}

struct Case {
  int N, V;
  float lo, hi;  // logit range
};

void check_case(const Case& c, uint32_t seed) {
  SCOPED_TRACE("N=" + std::to_string(c.N) + " V=" + std::to_string(c.V) + " logits in [" +
               std::to_string(c.lo) + ", " + std::to_string(c.hi) + "]");
  const auto logits = random_floats(static_cast<size_t>(c.N) * c.V, seed, c.lo, c.hi);
  auto targets = random_ints(c.N, seed + 1, 0, c.V);
  for (int n = 0; n < c.N; n += 3) targets[n] = kIgnoreTarget;
  const auto dlosses = random_floats(c.N, seed + 2, 0.1f, 1.0f);
  std::vector<double> losses_ref, dlogits_ref;
  reference_cross_entropy(logits, targets, dlosses, c.N, c.V, &losses_ref, &dlogits_ref);

  auto losses = poisoned(c.N);
  cross_entropy_forward(losses.data(), logits.data(), targets.data(), c.N, c.V);
  EXPECT_TRUE(all_close(losses, losses_ref, 1e-5, 1e-5));

  auto dlogits = poisoned(logits.size());
  cross_entropy_backward(dlogits.data(), logits.data(), targets.data(), dlosses.data(), c.N, c.V);
  EXPECT_TRUE(all_close(dlogits, dlogits_ref, 1e-4, 1e-6));

  auto in_place = logits;
  cross_entropy_backward(in_place.data(), in_place.data(), targets.data(), dlosses.data(), c.N,
                         c.V);
  EXPECT_EQ(0, std::memcmp(in_place.data(), dlogits.data(), dlogits.size() * sizeof(float)))
      << "in-place backward differs from out-of-place";
}

TEST(CrossEntropyTest, SmallVocabulary) { check_case({37, 101, -3.0f, 3.0f}, 1); }

TEST(CrossEntropyTest, SingleClass) { check_case({4, 1, -1.0f, 1.0f}, 2); }

TEST(CrossEntropyTest, LargeLogitsAreStable) { check_case({9, 257, -80.0f, 80.0f}, 3); }

TEST(CrossEntropyTest, GptVocabulary) { check_case({4, 50257, -5.0f, 5.0f}, 4); }

TEST(CrossEntropyTest, AllIgnoredRowsGiveZero) {
  const int N = 3, V = 7;
  const auto logits = random_floats(N * V, 5);
  const std::vector<int32_t> targets(N, kIgnoreTarget);
  const std::vector<float> dlosses(N, 1.0f);
  auto losses = poisoned(N);
  auto dlogits = poisoned(N * V);
  cross_entropy_forward(losses.data(), logits.data(), targets.data(), N, V);
  cross_entropy_backward(dlogits.data(), logits.data(), targets.data(), dlosses.data(), N, V);
  EXPECT_TRUE(all_close(losses, std::vector<float>(N, 0.0f), 0, 0));
  EXPECT_TRUE(all_close(dlogits, std::vector<float>(N * V, 0.0f), 0, 0));
}

TEST(CrossEntropyTest, RejectsTargetOutsideVocabulary) {
  const int N = 4, V = 10;
  const auto logits = random_floats(N * V, 6);
  std::vector<float> losses(N), dlosses(N, 1.0f), dlogits(N * V);
  for (int32_t bad : {V, -2}) {
    std::vector<int32_t> targets = {0, 3, bad, 9};
    try {
      cross_entropy_forward(losses.data(), logits.data(), targets.data(), N, V);
      ADD_FAILURE() << "no throw for target " << bad;
    } catch (const loom::Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("row 2"), std::string::npos) << what;
      EXPECT_NE(what.find("id " + std::to_string(bad)), std::string::npos) << what;
      EXPECT_NE(what.find("V " + std::to_string(V)), std::string::npos) << what;
    }
    EXPECT_THROW(cross_entropy_backward(dlogits.data(), logits.data(), targets.data(),
                                        dlosses.data(), N, V),
                 loom::Error);
  }
}

}  // namespace
}  // namespace loom::kernels::cpu
