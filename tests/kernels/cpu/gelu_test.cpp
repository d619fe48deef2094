// GELU (tanh) against a double-precision reference: forward, backward (analytic and finite
// differences), accumulation into dinp, in-place forward, extreme inputs, thread independence.
#include "kernels/cpu/gelu.h"

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

// The kernel is within a few ulp of the exact formula (see gelu.cpp), so fp32 tolerances:
// forward rtol 1e-6, backward rtol 1e-5 (the derivative has one more rounding chain); atol 1e-7
// covers values that cross zero.
constexpr double kForwardRtol = 1e-6;
constexpr double kBackwardRtol = 1e-5;
constexpr double kAtol = 1e-7;

const double kK = std::sqrt(2.0 / M_PI);

double gelu_ref(double x) { return 0.5 * x * (1.0 + std::tanh(kK * (x + 0.044715 * x * x * x))); }

double gelu_grad_ref(double x) {
  const double t = std::tanh(kK * (x + 0.044715 * x * x * x));
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * kK * (1.0 + 3.0 * 0.044715 * x * x);
}

const long kSizes[] = {1, 7, 33, 1000, 100003};

TEST(GeluTest, ForwardMatchesDoubleReference) {
  for (long n : kSizes) {
    SCOPED_TRACE(::testing::Message() << "N=" << n);
    std::vector<float> inp = random_floats(static_cast<size_t>(n), 1, -6.0f, 6.0f);
    std::vector<float> out = poisoned(static_cast<size_t>(n));
    gelu_forward(out.data(), inp.data(), n);
    std::vector<double> expected(static_cast<size_t>(n));
    for (size_t i = 0; i < expected.size(); ++i) expected[i] = gelu_ref(inp[i]);
    EXPECT_TRUE(all_close(out, expected, kForwardRtol, kAtol));
  }
}

TEST(GeluTest, ForwardInPlace) {
  const long n = 1001;
  std::vector<float> inp = random_floats(static_cast<size_t>(n), 2, -6.0f, 6.0f);
  std::vector<double> expected(inp.size());
  for (size_t i = 0; i < inp.size(); ++i) expected[i] = gelu_ref(inp[i]);
  gelu_forward(inp.data(), inp.data(), n);
  EXPECT_TRUE(all_close(inp, expected, kForwardRtol, kAtol));
}

TEST(GeluTest, ExtremeInputsStayFinite) {
  std::vector<float> inp = {0.0f, -0.0f, 1e-30f, -1e-30f, 20.0f, -20.0f, 100.0f, -100.0f,
                            1e4f, -1e4f, 1e20f, -1e20f, 3e38f, -3e38f};
  const long n = static_cast<long>(inp.size());
  std::vector<float> out = poisoned(inp.size());
  gelu_forward(out.data(), inp.data(), n);
  std::vector<float> dout(inp.size(), 1.0f);
  std::vector<float> dinp(inp.size(), 0.0f);
  gelu_backward(dinp.data(), inp.data(), dout.data(), n);
  std::vector<double> expected(inp.size()), expected_grad(inp.size());
  for (size_t i = 0; i < inp.size(); ++i) {
    expected[i] = gelu_ref(inp[i]);
    expected_grad[i] = gelu_grad_ref(inp[i]);
  }
  // Far negative inputs give ~1e-18 where the exact value is ~0: harmless, hence atol 1e-15.
  EXPECT_TRUE(all_close(out, expected, kForwardRtol, 1e-15));
  EXPECT_TRUE(all_close(dinp, expected_grad, kBackwardRtol, 1e-15));
}

TEST(GeluTest, BackwardMatchesAnalyticReferenceAndAccumulates) {
  for (long n : kSizes) {
    SCOPED_TRACE(::testing::Message() << "N=" << n);
    std::vector<float> inp = random_floats(static_cast<size_t>(n), 3, -6.0f, 6.0f);
    std::vector<float> dout = random_floats(static_cast<size_t>(n), 4);
    std::vector<float> dinp = random_floats(static_cast<size_t>(n), 5);
    std::vector<double> expected(dinp.size());
    for (size_t i = 0; i < dinp.size(); ++i) {
      expected[i] = static_cast<double>(dinp[i]) + gelu_grad_ref(inp[i]) * dout[i];
    }
    gelu_backward(dinp.data(), inp.data(), dout.data(), n);
    // The initial values are O(1), so an absolute term of fp32 size is needed on the sum.
    EXPECT_TRUE(all_close(dinp, expected, kBackwardRtol, 1e-6));
  }
}

TEST(GeluTest, BackwardMatchesFiniteDifferences) {
  // L = sum(gelu(x) * w); dL/dx_i = (L(x + h e_i) - L(x - h e_i)) / 2h = w_i * (gelu(x_i + h) -
  // gelu(x_i - h)) / 2h, in double (truncation error ~h^2 = 1e-10).
  const long n = 257;
  const double h = 1e-5;
  std::vector<float> inp = random_floats(static_cast<size_t>(n), 6, -6.0f, 6.0f);
  std::vector<float> w = random_floats(static_cast<size_t>(n), 7);
  std::vector<float> dinp(static_cast<size_t>(n), 0.0f);
  gelu_backward(dinp.data(), inp.data(), w.data(), n);
  std::vector<double> fd(dinp.size());
  for (size_t i = 0; i < fd.size(); ++i) {
    const double x = inp[i];
    fd[i] = w[i] * (gelu_ref(x + h) - gelu_ref(x - h)) / (2 * h);
  }
  EXPECT_TRUE(all_close(dinp, fd, 1e-5, 1e-6));
}

TEST(GeluTest, ResultDoesNotDependOnThreadCount) {
  const long n = 100003;
  std::vector<float> inp = random_floats(static_cast<size_t>(n), 8, -6.0f, 6.0f);
  std::vector<float> dout = random_floats(static_cast<size_t>(n), 9);
  const int saved = omp_get_max_threads();
  std::vector<float> out[2], dinp[2];
  const int threads[2] = {1, 2};
  for (int k = 0; k < 2; ++k) {
    omp_set_num_threads(threads[k]);
    out[k] = poisoned(static_cast<size_t>(n));
    dinp[k] = std::vector<float>(static_cast<size_t>(n), 0.5f);
    gelu_forward(out[k].data(), inp.data(), n);
    gelu_backward(dinp[k].data(), inp.data(), dout.data(), n);
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(0, std::memcmp(out[0].data(), out[1].data(), sizeof(float) * out[0].size()));
  EXPECT_EQ(0, std::memcmp(dinp[0].data(), dinp[1].data(), sizeof(float) * dinp[0].size()));
}

// bias_gelu_forward: pre is the fp32 sum inp + bias (exact up to one rounding: rtol 2^-24 ~ 6e-8,
// so 1e-7), out the gelu of that sum (the forward tolerances above, plus the sum's rounding
// carried through gelu' <= 1.13: rtol 2e-6, atol 1e-7).
TEST(GeluTest, BiasGeluForwardMatchesDoubleReference) {
  struct Shape {
    int N, C;
  };
  for (const Shape s : {Shape{1, 1}, Shape{7, 3}, Shape{13, 100}, Shape{5, 768}}) {
    const size_t n = static_cast<size_t>(s.N) * s.C;
    const std::vector<float> inp = random_floats(n, 10, -5.0f, 5.0f);
    const std::vector<float> bias = random_floats(static_cast<size_t>(s.C), 11);
    for (int variant = 0; variant < 4; ++variant) {
      const bool has_bias = (variant & 1) != 0;
      const bool save_pre = (variant & 2) != 0;
      SCOPED_TRACE(::testing::Message() << "N=" << s.N << " C=" << s.C << " bias=" << has_bias
                                        << " pre=" << save_pre);
      std::vector<double> expected_pre(n), expected_out(n);
      for (size_t k = 0; k < n; ++k) {
        expected_pre[k] = static_cast<double>(inp[k]) + (has_bias ? bias[k % static_cast<size_t>(s.C)] : 0.0f);
        expected_out[k] = gelu_ref(expected_pre[k]);
      }
      std::vector<float> out = poisoned(n), pre = poisoned(n);
      bias_gelu_forward(out.data(), save_pre ? pre.data() : nullptr, inp.data(),
                        has_bias ? bias.data() : nullptr, s.N, s.C);
      EXPECT_TRUE(all_close(out, expected_out, 2e-6, kAtol));
      if (save_pre) {
        EXPECT_TRUE(all_close(pre, expected_pre, 1e-7, 0.0));
      }
    }
  }
}

TEST(GeluTest, BiasGeluForwardInPlace) {
  const int N = 9, C = 31;
  std::vector<float> inp = random_floats(static_cast<size_t>(N) * C, 12, -5.0f, 5.0f);
  const std::vector<float> bias = random_floats(static_cast<size_t>(C), 13);
  std::vector<float> expected(inp.size()), pre_alias = inp;
  bias_gelu_forward(expected.data(), nullptr, inp.data(), bias.data(), N, C);
  // pre aliasing inp: inp becomes the sum, out is the same as out of place.
  std::vector<float> out(inp.size());
  bias_gelu_forward(out.data(), pre_alias.data(), pre_alias.data(), bias.data(), N, C);
  EXPECT_EQ(0, std::memcmp(out.data(), expected.data(), sizeof(float) * out.size()));
  // out aliasing inp.
  bias_gelu_forward(inp.data(), nullptr, inp.data(), bias.data(), N, C);
  EXPECT_EQ(0, std::memcmp(inp.data(), expected.data(), sizeof(float) * inp.size()));
}

// bias_backward: fp32 column sums of up to 1000 terms in [-1, 1] (error ~ sqrt(N) * 2^-24 * |sum
// so far| << 1e-5): rtol 1e-5, atol 1e-5; accumulates into dbias; thread independent.
TEST(GeluTest, BiasBackwardMatchesDoubleReferenceAndAccumulates) {
  struct Shape {
    int N, C;
  };
  for (const Shape s : {Shape{1, 1}, Shape{7, 3}, Shape{1000, 65}, Shape{33, 768}}) {
    SCOPED_TRACE(::testing::Message() << "N=" << s.N << " C=" << s.C);
    const std::vector<float> dout = random_floats(static_cast<size_t>(s.N) * s.C, 14);
    std::vector<float> dbias = random_floats(static_cast<size_t>(s.C), 15);
    std::vector<double> expected(dbias.begin(), dbias.end());
    for (int i = 0; i < s.N; ++i) {
      for (int c = 0; c < s.C; ++c) expected[static_cast<size_t>(c)] += dout[static_cast<size_t>(i) * s.C + c];
    }
    bias_backward(dbias.data(), dout.data(), s.N, s.C);
    EXPECT_TRUE(all_close(dbias, expected, 1e-5, 1e-5));
  }
  const int N = 1000, C = 200;
  const std::vector<float> dout = random_floats(static_cast<size_t>(N) * C, 16);
  const int saved = omp_get_max_threads();
  std::vector<float> dbias[2];
  const int threads[2] = {1, 3};
  for (int k = 0; k < 2; ++k) {
    omp_set_num_threads(threads[k]);
    dbias[k] = std::vector<float>(static_cast<size_t>(C), 0.25f);
    bias_backward(dbias[k].data(), dout.data(), N, C);
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(0, std::memcmp(dbias[0].data(), dbias[1].data(), sizeof(float) * C));
}

}  // namespace
}  // namespace loom::kernels::cpu
