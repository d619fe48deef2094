// RMSNorm against a double-precision reference: forward (outputs, rstd), backward (analytic and
// finite differences), accumulation, thread independence of the backward, the fused residual.
#include "kernels/cpu/rmsnorm.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "test_util.h"

namespace loom::kernels::cpu {
namespace {

using loom::testing::all_close;
using loom::testing::poisoned;
using loom::testing::random_floats;

// fp32 row statistics over <= 257 elements and O(1) outputs: errors ~1e-6 at worst, so rtol 1e-5
// and atol 1e-5 for values near zero. The backward has some cancellation (dnorm - norm * ...) and
// sums over up to 100 rows for dweight: rtol 1e-4, atol 2e-5 (the LayerNorm bounds).
constexpr double kForwardRtol = 1e-5;
constexpr double kForwardAtol = 1e-5;
constexpr double kBackwardRtol = 1e-4;
constexpr double kBackwardAtol = 2e-5;
constexpr float kEps = 1e-6f;  // Llama's rms_norm_eps; the tests also run 1e-5

struct Shape {
  int N, C;
};
const Shape kShapes[] = {{1, 1}, {1, 3}, {7, 3}, {7, 33}, {13, 64}, {100, 257}};

struct ForwardRef {
  std::vector<double> out, rstd;
};

ForwardRef forward_ref(const std::vector<double>& x, const std::vector<double>& w, double eps,
                       int N, int C) {
  ForwardRef r{std::vector<double>(x.size()), std::vector<double>(N)};
  for (int i = 0; i < N; ++i) {
    double ms = 0;
    for (int c = 0; c < C; ++c) ms += x[i * C + c] * x[i * C + c];
    const double s = 1.0 / std::sqrt(ms / C + eps);
    for (int c = 0; c < C; ++c) r.out[i * C + c] = x[i * C + c] * s * w[c];
    r.rstd[i] = s;
  }
  return r;
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

struct Inputs {
  std::vector<float> inp, weight, dout;
};

// Inputs of both signs around zero (no centring in RMSNorm).
Inputs make_inputs(int N, int C, uint32_t seed) {
  Inputs in{random_floats(static_cast<size_t>(N) * C, seed, -2.0f, 2.0f),
            random_floats(C, seed + 1, 0.5f, 1.5f),
            random_floats(static_cast<size_t>(N) * C, seed + 3)};
  return in;
}

TEST(RmsNormTest, ForwardMatchesDoubleReference) {
  for (float eps : {kEps, 1e-5f}) {
    for (const Shape& s : kShapes) {
      SCOPED_TRACE(::testing::Message() << "N=" << s.N << " C=" << s.C << " eps=" << eps);
      Inputs in = make_inputs(s.N, s.C, 1);
      std::vector<float> out = poisoned(in.inp.size());
      std::vector<float> rstd = poisoned(s.N);
      rmsnorm_forward(out.data(), rstd.data(), in.inp.data(), in.weight.data(), eps, s.N, s.C);
      ForwardRef ref = forward_ref(to_double(in.inp), to_double(in.weight), eps, s.N, s.C);
      EXPECT_TRUE(all_close(out, ref.out, kForwardRtol, kForwardAtol));
      // rstd can be large for small rows (C = 1): relative tolerance only.
      EXPECT_TRUE(all_close(rstd, ref.rstd, kForwardRtol, 0.0));

      // rstd is optional (inference).
      std::vector<float> out2 = poisoned(in.inp.size());
      rmsnorm_forward(out2.data(), nullptr, in.inp.data(), in.weight.data(), eps, s.N, s.C);
      EXPECT_EQ(0, std::memcmp(out.data(), out2.data(), sizeof(float) * out.size()));
    }
  }
}

TEST(RmsNormTest, ForwardOfZeroRowIsZeroWithRstdFromEps) {
  const int C = 5;
  std::vector<float> inp(C, 0.0f), weight(C, 1.0f), out = poisoned(C), rstd = poisoned(1);
  rmsnorm_forward(out.data(), rstd.data(), inp.data(), weight.data(), 1e-6f, 1, C);
  for (float v : out) EXPECT_EQ(v, 0.0f);
  EXPECT_NEAR(rstd[0], 1000.0, 1e-2);
}

TEST(RmsNormTest, BackwardMatchesAnalyticReferenceAndAccumulates) {
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "N=" << s.N << " C=" << s.C);
    const int N = s.N, C = s.C;
    Inputs in = make_inputs(N, C, 2);
    std::vector<float> out(in.inp.size()), rstd(N);
    rmsnorm_forward(out.data(), rstd.data(), in.inp.data(), in.weight.data(), kEps, N, C);
    std::vector<float> dinp = random_floats(in.inp.size(), 10);
    std::vector<float> dweight = random_floats(C, 11);
    std::vector<double> dinp_expected = to_double(dinp);
    std::vector<double> dweight_expected = to_double(dweight);
    ForwardRef ref = forward_ref(to_double(in.inp), to_double(in.weight), kEps, N, C);
    for (int i = 0; i < N; ++i) {
      // dx = rstd * (g - norm * mean(g * norm)), g = weight * dout.
      double g_norm_mean = 0;
      for (int c = 0; c < C; ++c) {
        const double norm = in.inp[i * C + c] * ref.rstd[i];
        const double g = static_cast<double>(in.weight[c]) * in.dout[i * C + c];
        g_norm_mean += g * norm / C;
        dweight_expected[c] += norm * in.dout[i * C + c];
      }
      for (int c = 0; c < C; ++c) {
        const double norm = in.inp[i * C + c] * ref.rstd[i];
        const double g = static_cast<double>(in.weight[c]) * in.dout[i * C + c];
        dinp_expected[i * C + c] += ref.rstd[i] * (g - norm * g_norm_mean);
      }
    }
    rmsnorm_backward(dinp.data(), dweight.data(), in.dout.data(), in.inp.data(), in.weight.data(),
                     rstd.data(), N, C);
    EXPECT_TRUE(all_close(dinp, dinp_expected, kBackwardRtol, kBackwardAtol));
    EXPECT_TRUE(all_close(dweight, dweight_expected, kBackwardRtol, kBackwardAtol));
  }
}

TEST(RmsNormTest, BackwardMatchesFiniteDifferences) {
  // L = sum(out * R) with the double forward; central differences with h = 1e-5 (truncation
  // ~1e-10, far below the fp32 kernel's error).
  for (const Shape& s : {Shape{7, 33}, Shape{3, 5}}) {
    SCOPED_TRACE(::testing::Message() << "N=" << s.N << " C=" << s.C);
    const int N = s.N, C = s.C;
    const double h = 1e-5;
    Inputs in = make_inputs(N, C, 3);  // in.dout plays R
    std::vector<float> out(in.inp.size()), rstd(N);
    rmsnorm_forward(out.data(), rstd.data(), in.inp.data(), in.weight.data(), kEps, N, C);
    std::vector<float> dinp(in.inp.size(), 0.0f), dweight(C, 0.0f);
    rmsnorm_backward(dinp.data(), dweight.data(), in.dout.data(), in.inp.data(), in.weight.data(),
                     rstd.data(), N, C);

    std::vector<double> x = to_double(in.inp), w = to_double(in.weight);
    auto loss = [&] {
      std::vector<double> y = forward_ref(x, w, kEps, N, C).out;
      double L = 0;
      for (size_t i = 0; i < y.size(); ++i) L += y[i] * in.dout[i];
      return L;
    };
    loom::testing::expect_finite_differences(x, dinp, loss, h, 3, kBackwardRtol, kBackwardAtol,
                                             "dinp");
    loom::testing::expect_finite_differences(w, dweight, loss, h, 3, kBackwardRtol,
                                             kBackwardAtol, "dweight");
  }
}

TEST(RmsNormTest, BackwardDoesNotDependOnThreadCount) {
  const int N = 1000, C = 77;
  Inputs in = make_inputs(N, C, 4);
  std::vector<float> out(in.inp.size()), rstd(N);
  rmsnorm_forward(out.data(), rstd.data(), in.inp.data(), in.weight.data(), kEps, N, C);
  const int saved = omp_get_max_threads();
  const int threads[3] = {1, 2, 3};
  std::vector<float> dinp[3], dweight[3];
  for (int k = 0; k < 3; ++k) {
    omp_set_num_threads(threads[k]);
    dinp[k] = std::vector<float>(in.inp.size(), 0.5f);
    dweight[k] = std::vector<float>(C, 0.5f);
    rmsnorm_backward(dinp[k].data(), dweight[k].data(), in.dout.data(), in.inp.data(),
                     in.weight.data(), rstd.data(), N, C);
  }
  omp_set_num_threads(saved);
  for (int k = 1; k < 3; ++k) {
    SCOPED_TRACE(::testing::Message() << threads[k] << " threads vs 1");
    EXPECT_EQ(0, std::memcmp(dinp[0].data(), dinp[k].data(), sizeof(float) * dinp[0].size()));
    EXPECT_EQ(0, std::memcmp(dweight[0].data(), dweight[k].data(), sizeof(float) * C));
  }
}

// residual_rmsnorm_forward: the residual sum in double, then the double RMSNorm of it. The fp32
// sum of three terms of size <= 2 is within 2 roundings (~5e-7 absolute) of the double one: rtol
// 1e-6, atol 1e-6; the RMSNorm after it keeps the forward tolerances above (the residual's error
// times rstd ~ 1-2 stays far below 1e-5).
TEST(RmsNormTest, ResidualForwardMatchesDoubleReference) {
  constexpr double kSumTol = 1e-6;
  for (const Shape& s : kShapes) {
    const int N = s.N, C = s.C;
    Inputs in = make_inputs(N, C, 5);
    const std::vector<float> delta = random_floats(in.inp.size(), 6);
    const std::vector<float> delta_bias = random_floats(C, 7);
    // Every combination of absent operands, each with and without residual_out aliasing residual_in.
    for (int variant = 0; variant < 8; ++variant) {
      const bool has_residual = (variant & 1) != 0;
      const bool has_delta = (variant & 2) != 0;
      const bool has_delta_bias = (variant & 4) != 0;
      if (!has_residual && !has_delta) continue;
      for (bool in_place : {false, true}) {
        if (in_place && !has_residual) continue;
        SCOPED_TRACE(::testing::Message() << "N=" << N << " C=" << C << " residual=" << has_residual
                                          << " delta=" << has_delta << " delta_bias="
                                          << has_delta_bias << " in_place=" << in_place);
        std::vector<double> expected_residual(in.inp.size(), 0.0);
        for (int i = 0; i < N; ++i) {
          for (int c = 0; c < C; ++c) {
            const size_t k = static_cast<size_t>(i) * C + c;
            if (has_residual) expected_residual[k] += in.inp[k];
            if (has_delta) expected_residual[k] += delta[k];
            if (has_delta_bias) expected_residual[k] += delta_bias[c];
          }
        }
        std::vector<float> residual_in = in.inp;
        std::vector<float> residual_out = in_place ? residual_in : poisoned(in.inp.size());
        std::vector<float>& residual_target = in_place ? residual_in : residual_out;
        std::vector<float> out = poisoned(in.inp.size());
        std::vector<float> rstd = poisoned(N);
        residual_rmsnorm_forward(residual_target.data(), out.data(), rstd.data(),
                                 has_residual ? residual_in.data() : nullptr,
                                 has_delta ? delta.data() : nullptr,
                                 has_delta_bias ? delta_bias.data() : nullptr, in.weight.data(),
                                 kEps, N, C);
        ForwardRef ref = forward_ref(expected_residual, to_double(in.weight), kEps, N, C);
        EXPECT_TRUE(all_close(residual_target, expected_residual, kSumTol, kSumTol));
        EXPECT_TRUE(all_close(out, ref.out, kForwardRtol, kForwardAtol));
        EXPECT_TRUE(all_close(rstd, ref.rstd, kForwardRtol, 0.0));
      }
    }
  }
}

}  // namespace
}  // namespace loom::kernels::cpu
