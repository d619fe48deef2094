// Tests for AdamW (several steps against a double-precision version of torch's formula), the
// deterministic sum of squares, and the clipping factor.
//
// Tolerances: after 5 float steps the parameters and moments agree with the double reference to
// rtol 1e-5, atol 1e-6 (updates are ~lr = 1e-2 and each step adds a few float roundings).
// sum_of_squares accumulates in double: rtol 1e-12. The arena update (adamw_update_segments) is
// checked against the same double reference per segment, with the same tolerances.
#include "kernels/cpu/adamw.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "test_util.h"

namespace loom::kernels::cpu {
namespace {

using loom::testing::all_close;
using loom::testing::random_floats;

struct Moments {
  std::vector<double> param, m, v;
};

void reference_adamw_step(Moments* s, const std::vector<float>& grad, const AdamWHyper& h) {
  const double lr = h.lr, b1 = h.beta1, b2 = h.beta2;
  const auto t = static_cast<double>(h.step);
  const double bc1 = 1 - std::pow(b1, t);
  const double bc2 = 1 - std::pow(b2, t);
  for (size_t i = 0; i < grad.size(); ++i) {
    const double g = static_cast<double>(grad[i]) * h.grad_scale;
    s->param[i] *= 1 - lr * h.weight_decay;
    s->m[i] = b1 * s->m[i] + (1 - b1) * g;
    s->v[i] = b2 * s->v[i] + (1 - b2) * g * g;
    s->param[i] -= lr / bc1 * s->m[i] / (std::sqrt(s->v[i]) / std::sqrt(bc2) + h.eps);
  }
}

void check_steps(float weight_decay, float grad_scale) {
  SCOPED_TRACE("weight_decay " + std::to_string(weight_decay) + " grad_scale " +
               std::to_string(grad_scale));
  const size_t n = 1001;
  auto param = random_floats(n, 7);
  std::vector<float> m(n, 0.0f), v(n, 0.0f);
  Moments ref{{param.begin(), param.end()}, std::vector<double>(n, 0.0),
              std::vector<double>(n, 0.0)};
  AdamWHyper h;
  h.lr = 1e-2f;
  h.weight_decay = weight_decay;
  h.grad_scale = grad_scale;
  for (int step = 1; step <= 5; ++step) {
    h.step = step;
    const auto grad = random_floats(n, 100 + static_cast<uint32_t>(step));
    adamw_update(param.data(), grad.data(), m.data(), v.data(), static_cast<int64_t>(n), h);
    reference_adamw_step(&ref, grad, h);
  }
  EXPECT_TRUE(all_close(param, ref.param, 1e-5, 1e-6));
  EXPECT_TRUE(all_close(m, ref.m, 1e-5, 1e-6));
  EXPECT_TRUE(all_close(v, ref.v, 1e-5, 1e-6));
}

TEST(AdamWTest, MatchesTorchFormulaWithoutDecay) { check_steps(0.0f, 1.0f); }

TEST(AdamWTest, MatchesTorchFormulaWithDecay) { check_steps(0.1f, 1.0f); }

TEST(AdamWTest, AppliesGradScale) { check_steps(0.1f, 0.37f); }

TEST(AdamWTest, SumOfSquaresMatchesReferenceAndIsDeterministic) {
  const size_t n = 100003;  // several chunks, the last partial
  const auto x = random_floats(n, 8, -3.0f, 3.0f);
  double expected = 0;
  for (float xi : x) expected += static_cast<double>(xi) * xi;
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const double one = sum_of_squares(x.data(), static_cast<int64_t>(n));
  omp_set_num_threads(2);
  const double two = sum_of_squares(x.data(), static_cast<int64_t>(n));
  omp_set_num_threads(saved);
  EXPECT_NEAR(one, expected, 1e-12 * expected);
  EXPECT_EQ(one, two);  // bitwise
  EXPECT_EQ(sum_of_squares(x.data(), 0), 0.0);
}

TEST(AdamWTest, ClipScale) {
  EXPECT_EQ(clip_scale(10.0, 0.0f), 1.0f);   // disabled
  EXPECT_EQ(clip_scale(10.0, -1.0f), 1.0f);  // disabled
  EXPECT_EQ(clip_scale(0.5, 1.0f), 1.0f);    // already small
  EXPECT_EQ(clip_scale(0.0, 1.0f), 1.0f);
  EXPECT_FLOAT_EQ(clip_scale(4.0, 1.0f), static_cast<float>(1.0 / (4.0 + 1e-6)));
}

// An arena of three segments (decay, no decay, decay) with padding between and after them.
TEST(AdamWTest, SegmentsUpdateTheirRunsAndLeavePaddingAlone) {
  const int64_t n = 2100;
  const std::vector<AdamWSegment> segments = {{0, 700, 1}, {700, 1001, 0}, {1040, 2090, 1}};
  auto master = random_floats(n, 11);
  auto m = random_floats(n, 12, 0.0f, 0.1f);
  auto v = random_floats(n, 13, 0.0f, 0.01f);
  const auto grad = random_floats(n, 14, -2.0f, 2.0f);
  std::vector<bf16> params(n, bf16{0x1234});
  Moments ref{{master.begin(), master.end()}, {m.begin(), m.end()}, {v.begin(), v.end()}};
  const auto master_before = master;
  AdamWArenaHyper hyper;
  hyper.lr = 1e-2f;
  hyper.weight_decay = 0.1f;
  hyper.step = 3;
  hyper.max_norm = 1.0f;
  const float norm = 4.0f;  // clipping active: the gradient is scaled by ~1/4
  adamw_update_segments(master.data(), params.data(), grad.data(), m.data(), v.data(), n,
                        segments.data(), static_cast<int>(segments.size()), norm, hyper);
  AdamWHyper h;
  h.lr = hyper.lr;
  h.step = hyper.step;
  h.grad_scale = clip_scale(norm, hyper.max_norm);
  for (const AdamWSegment& s : segments) {
    h.weight_decay = s.decay ? hyper.weight_decay : 0.0f;
    Moments seg{{ref.param.begin() + s.begin, ref.param.begin() + s.end},
                {ref.m.begin() + s.begin, ref.m.begin() + s.end},
                {ref.v.begin() + s.begin, ref.v.begin() + s.end}};
    const std::vector<float> seg_grad(grad.begin() + s.begin, grad.begin() + s.end);
    reference_adamw_step(&seg, seg_grad, h);
    std::copy(seg.param.begin(), seg.param.end(), ref.param.begin() + s.begin);
    std::copy(seg.m.begin(), seg.m.end(), ref.m.begin() + s.begin);
    std::copy(seg.v.begin(), seg.v.end(), ref.v.begin() + s.begin);
  }
  EXPECT_TRUE(all_close(master, ref.param, 1e-5, 1e-6));
  EXPECT_TRUE(all_close(m, ref.m, 1e-5, 1e-6));
  EXPECT_TRUE(all_close(v, ref.v, 1e-5, 1e-6));
  for (int64_t i = 0; i < n; ++i) {
    const bool inside = i < 1001 || (i >= 1040 && i < 2090);
    if (inside) {
      ASSERT_EQ(params[i].bits, float_to_bf16(master[i]).bits) << "index " << i;
    } else {
      ASSERT_EQ(params[i].bits, 0x1234) << "padding index " << i;
      ASSERT_EQ(master[i], master_before[i]) << "padding index " << i;
    }
  }
}

TEST(AdamWTest, SegmentsSkipTheStepWhenTheNormIsNotFinite) {
  const int64_t n = 64;
  const std::vector<AdamWSegment> segments = {{0, 32, 1}, {32, 64, 0}};
  auto master = random_floats(n, 21);
  auto m = random_floats(n, 22);
  auto v = random_floats(n, 23, 0.0f, 1.0f);
  const auto grad = random_floats(n, 24);
  std::vector<bf16> params(n, bf16{0x4321});
  const auto master_before = master, m_before = m, v_before = v;
  AdamWArenaHyper hyper;
  hyper.lr = 1e-2f;
  hyper.max_norm = 1.0f;
  for (float norm : {std::numeric_limits<float>::quiet_NaN(),
                     std::numeric_limits<float>::infinity()}) {
    adamw_update_segments(master.data(), params.data(), grad.data(), m.data(), v.data(), n,
                          segments.data(), 2, norm, hyper);
    EXPECT_EQ(std::memcmp(master.data(), master_before.data(), n * sizeof(float)), 0);
    EXPECT_EQ(std::memcmp(m.data(), m_before.data(), n * sizeof(float)), 0);
    EXPECT_EQ(std::memcmp(v.data(), v_before.data(), n * sizeof(float)), 0);
    for (const bf16 p : params) ASSERT_EQ(p.bits, 0x4321);
  }
}

TEST(AdamWTest, SegmentsMustBeSortedDisjointAndInside) {
  std::vector<float> x(10, 0.0f);
  std::vector<bf16> params(10);
  const AdamWArenaHyper hyper;
  const std::vector<std::vector<AdamWSegment>> bad = {
      {{0, 5, 0}, {4, 8, 0}},  // overlapping
      {{5, 8, 0}, {0, 2, 0}},  // unsorted
      {{0, 11, 0}},            // past the arena
      {{3, 2, 0}}};            // reversed
  for (const auto& segments : bad) {
    EXPECT_THROW(adamw_update_segments(x.data(), params.data(), x.data(), x.data(), x.data(), 10,
                                       segments.data(), static_cast<int>(segments.size()), 1.0f,
                                       hyper),
                 Error);
  }
}

}  // namespace
}  // namespace loom::kernels::cpu
