// SwiGLU against a double-precision reference: forward, backward (analytic and finite
// differences), the overwrite of dgu, extreme inputs, thread independence; odd sizes.
#include "kernels/cpu/swiglu.h"

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

// silu is within a few ulp of the exact formula (fast_exp ~2 ulp, one division), times up (one
// more rounding): forward rtol 1e-6, atol 1e-7 for values that cross zero. The backward's silu'
// has a longer rounding chain: rtol 1e-5; and silu' crosses zero at g ~ -1.28, where 1 + g e s
// cancels to an absolute error of ~2^-23, times |dout * up| <= 8: atol 1e-6.
constexpr double kForwardRtol = 1e-6;
constexpr double kBackwardRtol = 1e-5;
constexpr double kAtol = 1e-7;
constexpr double kBackwardAtol = 1e-6;

double sigmoid_ref(double g) { return 1.0 / (1.0 + std::exp(-g)); }
double silu_ref(double g) { return g * sigmoid_ref(g); }
double silu_grad_ref(double g) {
  const double s = sigmoid_ref(g);
  return s * (1.0 + g * (1.0 - s));
}

struct Size {
  int N, F;
};
const Size kSizes[] = {{1, 1}, {1, 7}, {3, 33}, {13, 100}, {37, 1001}};

std::vector<double> forward_ref(const std::vector<float>& gu, int N, int F) {
  std::vector<double> out(static_cast<size_t>(N) * F);
  for (int i = 0; i < N; ++i) {
    for (int c = 0; c < F; ++c) {
      const size_t row = static_cast<size_t>(i) * 2 * F;
      out[static_cast<size_t>(i) * F + c] = silu_ref(gu[row + c]) * gu[row + F + c];
    }
  }
  return out;
}

std::vector<double> backward_ref(const std::vector<float>& gu, const std::vector<float>& dout, int N, int F) {
  std::vector<double> dgu(static_cast<size_t>(N) * 2 * F);
  for (int i = 0; i < N; ++i) {
    for (int c = 0; c < F; ++c) {
      const size_t row = static_cast<size_t>(i) * 2 * F;
      const double g = gu[row + c], u = gu[row + F + c], dy = dout[static_cast<size_t>(i) * F + c];
      dgu[row + c] = dy * u * silu_grad_ref(g);
      dgu[row + F + c] = dy * silu_ref(g);
    }
  }
  return dgu;
}

TEST(SwiGluTest, ForwardMatchesDoubleReference) {
  for (const Size& s : kSizes) {
    SCOPED_TRACE(::testing::Message() << "N=" << s.N << " F=" << s.F);
    const std::vector<float> gu = random_floats(static_cast<size_t>(s.N) * 2 * s.F, 1, -8.0f, 8.0f);
    std::vector<float> out = poisoned(static_cast<size_t>(s.N) * s.F);
    swiglu_forward(out.data(), gu.data(), s.N, s.F);
    EXPECT_TRUE(all_close(out, forward_ref(gu, s.N, s.F), kForwardRtol, kAtol));
  }
}

TEST(SwiGluTest, BackwardMatchesAnalyticReferenceAndOverwrites) {
  for (const Size& s : kSizes) {
    SCOPED_TRACE(::testing::Message() << "N=" << s.N << " F=" << s.F);
    const std::vector<float> gu = random_floats(static_cast<size_t>(s.N) * 2 * s.F, 2, -8.0f, 8.0f);
    const std::vector<float> dout = random_floats(static_cast<size_t>(s.N) * s.F, 3);
    // dgu is an activation gradient: whatever it held before is overwritten.
    std::vector<float> dgu = poisoned(gu.size());
    swiglu_backward(dgu.data(), gu.data(), dout.data(), s.N, s.F);
    EXPECT_TRUE(all_close(dgu, backward_ref(gu, dout, s.N, s.F), kBackwardRtol, kBackwardAtol));
  }
}

TEST(SwiGluTest, BackwardMatchesFiniteDifferences) {
  // L = sum(swiglu(gu) * w); dL/dgu_k by central differences in double (truncation ~h^2 = 1e-10),
  // each element of gu perturbed in turn.
  const int N = 5, F = 9;
  const double h = 1e-5;
  const std::vector<float> gu = random_floats(static_cast<size_t>(N) * 2 * F, 4, -6.0f, 6.0f);
  const std::vector<float> w = random_floats(static_cast<size_t>(N) * F, 5);
  std::vector<float> dgu = poisoned(gu.size());
  swiglu_backward(dgu.data(), gu.data(), w.data(), N, F);
  auto loss = [&](size_t k, double delta) {
    double sum = 0.0;
    for (int i = 0; i < N; ++i) {
      for (int c = 0; c < F; ++c) {
        const size_t gate = static_cast<size_t>(i) * 2 * F + c, up = gate + F;
        const double g = gu[gate] + (k == gate ? delta : 0.0);
        const double u = gu[up] + (k == up ? delta : 0.0);
        sum += silu_ref(g) * u * w[static_cast<size_t>(i) * F + c];
      }
    }
    return sum;
  };
  std::vector<double> fd(gu.size());
  for (size_t k = 0; k < fd.size(); ++k) fd[k] = (loss(k, h) - loss(k, -h)) / (2 * h);
  EXPECT_TRUE(all_close(dgu, fd, 1e-5, 1e-6));
}

TEST(SwiGluTest, ExtremeInputsStayFinite) {
  const std::vector<float> gates = {0.0f,  -0.0f, 1e-30f, -1e-30f, 20.0f, -20.0f, 85.0f, -85.0f,
                                    100.0f, -100.0f, 1e4f, -1e4f,   1e20f, -1e20f, 3e38f, -3e38f};
  const int F = static_cast<int>(gates.size());
  std::vector<float> gu(gates);
  gu.insert(gu.end(), static_cast<size_t>(F), 0.5f);  // up = 0.5
  std::vector<float> out = poisoned(static_cast<size_t>(F));
  swiglu_forward(out.data(), gu.data(), 1, F);
  const std::vector<float> dout(static_cast<size_t>(F), 1.0f);
  std::vector<float> dgu = poisoned(gu.size());
  swiglu_backward(dgu.data(), gu.data(), dout.data(), 1, F);
  // Far negative gates give ~1e-36 where the exact value is ~0: harmless, hence atol 1e-15.
  EXPECT_TRUE(all_close(out, forward_ref(gu, 1, F), kForwardRtol, 1e-15));
  EXPECT_TRUE(all_close(dgu, backward_ref(gu, dout, 1, F), kBackwardRtol, 1e-15));
}

TEST(SwiGluTest, ResultDoesNotDependOnThreadCount) {
  const int N = 301, F = 257;
  const std::vector<float> gu = random_floats(static_cast<size_t>(N) * 2 * F, 6, -8.0f, 8.0f);
  const std::vector<float> dout = random_floats(static_cast<size_t>(N) * F, 7);
  const int saved = omp_get_max_threads();
  std::vector<float> out[2], dgu[2];
  const int threads[2] = {1, 3};
  for (int k = 0; k < 2; ++k) {
    omp_set_num_threads(threads[k]);
    out[k] = poisoned(static_cast<size_t>(N) * F);
    dgu[k] = poisoned(gu.size());
    swiglu_forward(out[k].data(), gu.data(), N, F);
    swiglu_backward(dgu[k].data(), gu.data(), dout.data(), N, F);
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(0, std::memcmp(out[0].data(), out[1].data(), sizeof(float) * out[0].size()));
  EXPECT_EQ(0, std::memcmp(dgu[0].data(), dgu[1].data(), sizeof(float) * dgu[0].size()));
}

}  // namespace
}  // namespace loom::kernels::cpu
