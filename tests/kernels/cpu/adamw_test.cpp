// Tests for AdamW (several steps against a double-precision version of torch's formula), the
// deterministic sum of squares, and the clipping factor.
//
// Tolerances: after 5 float steps the parameters and moments agree with the double reference to
// rtol 1e-5, atol 1e-6 (updates are ~lr = 1e-2 and each step adds a few float roundings).
// sum_of_squares accumulates in double: rtol 1e-12.
#include "kernels/cpu/adamw.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
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

}  // namespace
}  // namespace loom::kernels::cpu
