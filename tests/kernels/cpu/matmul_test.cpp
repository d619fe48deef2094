// Matmul against a double-precision reference: forward with and without bias, backward (analytic
// and finite differences), accumulation, optional gradients, thread independence of dbias.
#include "kernels/cpu/matmul.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/base/check.h"
#include "test_util.h"

namespace loom::kernels::cpu {
namespace {

using loom::testing::all_close;
using loom::testing::poisoned;
using loom::testing::random_floats;

// fp32 dot products of length <= 129 with O(1) terms in [-1, 1]: absolute error ~sqrt(K) * 6e-8
// * |terms|, so rtol 1e-5 with atol 1e-5 (values near zero) leaves a margin of ~10x.
constexpr double kRtol = 1e-5;
constexpr double kAtol = 1e-5;

struct Shape {
  int N, C, OC;
};
const Shape kShapes[] = {{1, 1, 1}, {1, 3, 5}, {7, 3, 5}, {13, 33, 65}, {64, 129, 96}};

std::array<size_t, 3> dims(const Shape& s) {
  return {static_cast<size_t>(s.N), static_cast<size_t>(s.C), static_cast<size_t>(s.OC)};
}

// out (N, OC) = inp (N, C) @ weight^T + bias, in double.
std::vector<double> forward_ref(const std::vector<double>& inp, const std::vector<double>& weight,
                                const std::vector<double>* bias, int N, int C, int OC) {
  std::vector<double> out(static_cast<size_t>(N) * OC);
  for (int n = 0; n < N; ++n) {
    for (int o = 0; o < OC; ++o) {
      double acc = bias != nullptr ? (*bias)[o] : 0.0;
      for (int c = 0; c < C; ++c) acc += inp[n * C + c] * weight[o * C + c];
      out[n * OC + o] = acc;
    }
  }
  return out;
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

TEST(MatmulTest, ForwardMatchesDoubleReference) {
  for (const Shape& s : kShapes) {
    for (bool with_bias : {true, false}) {
      SCOPED_TRACE(::testing::Message() << "N=" << s.N << " C=" << s.C << " OC=" << s.OC
                                        << " bias=" << with_bias);
      auto [N, C, OC] = dims(s);
      std::vector<float> inp = random_floats(N * C, 1);
      std::vector<float> weight = random_floats(OC * C, 2);
      std::vector<float> bias = random_floats(OC, 3);
      std::vector<float> out = poisoned(N * OC);
      matmul_forward(out.data(), inp.data(), weight.data(), with_bias ? bias.data() : nullptr,
                     s.N, s.C, s.OC);
      std::vector<double> bias_d = to_double(bias);
      std::vector<double> expected = forward_ref(to_double(inp), to_double(weight),
                                                 with_bias ? &bias_d : nullptr, s.N, s.C, s.OC);
      EXPECT_TRUE(all_close(out, expected, kRtol, kAtol));
    }
  }
}

TEST(MatmulTest, BackwardMatchesAnalyticReferenceAndAccumulates) {
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "N=" << s.N << " C=" << s.C << " OC=" << s.OC);
    auto [N, C, OC] = dims(s);
    std::vector<float> inp = random_floats(N * C, 1);
    std::vector<float> weight = random_floats(OC * C, 2);
    std::vector<float> dout = random_floats(N * OC, 4);
    // Random initial gradients: the kernel must add to them.
    std::vector<float> dinp = random_floats(N * C, 5);
    std::vector<float> dweight = random_floats(OC * C, 6);
    std::vector<float> dbias = random_floats(OC, 7);
    std::vector<double> dinp_expected = to_double(dinp);
    std::vector<double> dweight_expected = to_double(dweight);
    std::vector<double> dbias_expected = to_double(dbias);
    for (size_t n = 0; n < N; ++n) {
      for (size_t o = 0; o < OC; ++o) {
        const double d = dout[n * OC + o];
        dbias_expected[o] += d;
        for (size_t c = 0; c < C; ++c) {
          dinp_expected[n * C + c] += d * weight[o * C + c];
          dweight_expected[o * C + c] += d * inp[n * C + c];
        }
      }
    }
    matmul_backward(dinp.data(), dweight.data(), dbias.data(), dout.data(), inp.data(),
                    weight.data(), s.N, s.C, s.OC);
    EXPECT_TRUE(all_close(dinp, dinp_expected, kRtol, kAtol));
    EXPECT_TRUE(all_close(dweight, dweight_expected, kRtol, kAtol));
    EXPECT_TRUE(all_close(dbias, dbias_expected, kRtol, kAtol));
  }
}

TEST(MatmulTest, BackwardMatchesFiniteDifferences) {
  // L = sum(out * R) with the double forward; central differences, h = 1e-4 (L is linear in each
  // parameter, so the difference is exact up to double rounding).
  const int N = 7, C = 33, OC = 65;
  const double h = 1e-4;
  std::vector<float> inp = random_floats(N * C, 11);
  std::vector<float> weight = random_floats(OC * C, 12);
  std::vector<float> bias = random_floats(OC, 13);
  std::vector<float> R = random_floats(N * OC, 14);
  std::vector<float> dinp(N * C, 0.0f), dweight(OC * C, 0.0f), dbias(OC, 0.0f);
  matmul_backward(dinp.data(), dweight.data(), dbias.data(), R.data(), inp.data(), weight.data(),
                  N, C, OC);

  std::vector<double> x = to_double(inp), w = to_double(weight), b = to_double(bias);
  auto loss = [&] {
    std::vector<double> out = forward_ref(x, w, &b, N, C, OC);
    double L = 0;
    for (size_t i = 0; i < out.size(); ++i) L += out[i] * R[i];
    return L;
  };
  loom::testing::expect_finite_differences(x, dinp, loss, h, 7, kRtol, kAtol, "dinp");
  loom::testing::expect_finite_differences(w, dweight, loss, h, 7, kRtol, kAtol, "dweight");
  loom::testing::expect_finite_differences(b, dbias, loss, h, 7, kRtol, kAtol, "dbias");
}

TEST(MatmulTest, NullGradientsAreSkipped) {
  const int N = 5, C = 9, OC = 17;
  std::vector<float> inp = random_floats(N * C, 21);
  std::vector<float> weight = random_floats(OC * C, 22);
  std::vector<float> dout = random_floats(N * OC, 23);
  std::vector<float> dinp_all(N * C, 0.0f), dweight_all(OC * C, 0.0f), dbias_all(OC, 0.0f);
  matmul_backward(dinp_all.data(), dweight_all.data(), dbias_all.data(), dout.data(), inp.data(),
                  weight.data(), N, C, OC);
  std::vector<float> dinp(N * C, 0.0f), dweight(OC * C, 0.0f), dbias(OC, 0.0f);
  // Only the wanted gradient is computed; the inputs it does not need may be null too.
  matmul_backward(dinp.data(), nullptr, nullptr, dout.data(), nullptr, weight.data(), N, C, OC);
  matmul_backward(nullptr, dweight.data(), nullptr, dout.data(), inp.data(), nullptr, N, C, OC);
  matmul_backward(nullptr, nullptr, dbias.data(), dout.data(), nullptr, nullptr, N, C, OC);
  EXPECT_EQ(dinp, dinp_all);
  EXPECT_EQ(dweight, dweight_all);
  EXPECT_EQ(dbias, dbias_all);
}

TEST(MatmulTest, RejectsBadArguments) {
  std::vector<float> a(4, 1.0f), b(4, 1.0f), c(4, 0.0f);
  EXPECT_THROW(matmul_forward(c.data(), a.data(), b.data(), nullptr, 0, 2, 2), loom::Error);
  EXPECT_THROW(matmul_forward(c.data(), nullptr, b.data(), nullptr, 2, 2, 2), loom::Error);
  EXPECT_THROW(matmul_backward(c.data(), nullptr, nullptr, a.data(), a.data(), nullptr, 2, 2, 2),
               loom::Error);
}

TEST(MatmulTest, BiasGradientDoesNotDependOnThreadCount) {
  const int N = 301, C = 8, OC = 1000;
  std::vector<float> inp = random_floats(N * C, 31);
  std::vector<float> weight = random_floats(OC * C, 32);
  std::vector<float> dout = random_floats(N * OC, 33);
  const int saved = omp_get_max_threads();
  std::vector<float> dbias[3];
  const int threads[3] = {1, 2, 3};
  for (int k = 0; k < 3; ++k) {
    omp_set_num_threads(threads[k]);
    dbias[k] = std::vector<float>(OC, 0.25f);
    matmul_backward(nullptr, nullptr, dbias[k].data(), dout.data(), inp.data(), weight.data(), N,
                    C, OC);
  }
  omp_set_num_threads(saved);
  for (int k = 1; k < 3; ++k) {
    EXPECT_EQ(0, std::memcmp(dbias[0].data(), dbias[k].data(), sizeof(float) * OC))
        << threads[k] << " threads differ from 1";
  }
}

}  // namespace
}  // namespace loom::kernels::cpu
