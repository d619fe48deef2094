// GELU (tanh approximation) on the CPU.
//
// glibc's tanhf is not vectorised without -ffast-math, and a scalar call per element makes GELU
// one of the slowest ops of a training step. So the formula is rewritten around fast_exp:
//   0.5 * (1 + tanh(u)) = sigmoid(2u) = 1 / (1 + exp(-2u)),
// hence gelu(x) = x * s and gelu'(x) = s + 2 x s (1 - s) u', with s = sigmoid(2u) and
// 1 - s = exp(-2u) * s. Both tails stay accurate to a few ulp (no 1 + tanh cancellation).
#include "kernels/cpu/gelu.h"

#include <algorithm>
#include <cstdint>

#include "core/base/check.h"
#include "kernels/cpu/fast_exp.h"

namespace loom::kernels::cpu {
namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;
// Beyond +-kTailX, gelu(x) is x or 0 and gelu'(x) is 1 or 0 to far below fp32 resolution
// (exp(-2|u|) < 1e-37). There the exact tail value is selected, because fast_exp's clamp (and
// x^3 overflowing to inf for huge |x|) would otherwise leak into the result.
constexpr float kTailX = 10.0f;
// Columns per bias_backward work unit; fixed so the split never depends on the thread count.
constexpr int kColumnBlock = 64;

}  // namespace

void gelu_forward(float* out, const float* inp, long N) {
  LOOM_CHECK(N > 0, "gelu size must be positive: N", N);
  LOOM_CHECK(out != nullptr && inp != nullptr, "gelu_forward: out and inp must be non-null");
#pragma omp parallel for simd schedule(static)
  for (long i = 0; i < N; ++i) {
    const float x = inp[i];
    const float u = kSqrt2OverPi * (x + kCubic * x * x * x);
    const float y = x / (1.0f + fast_exp(-2.0f * u));
    out[i] = x < -kTailX ? 0.0f : y;
  }
}

void gelu_backward(float* dinp, const float* inp, const float* dout, long N) {
  LOOM_CHECK(N > 0, "gelu size must be positive: N", N);
  LOOM_CHECK(dinp != nullptr && inp != nullptr && dout != nullptr,
             "gelu_backward: dinp, inp and dout must be non-null");
#pragma omp parallel for simd schedule(static)
  for (long i = 0; i < N; ++i) {
    const float x = inp[i];
    const float u = kSqrt2OverPi * (x + kCubic * x * x * x);
    const float du = kSqrt2OverPi * (1.0f + 3.0f * kCubic * x * x);
    const float e = fast_exp(-2.0f * u);
    const float s = 1.0f / (1.0f + e);
    const float one_minus_s = e * s;
    const float grad = s + 2.0f * x * s * one_minus_s * du;
    dinp[i] += (x > kTailX ? 1.0f : (x < -kTailX ? 0.0f : grad)) * dout[i];
  }
}

void bias_gelu_forward(float* out, float* pre, const float* inp, const float* bias, int N, int C) {
  LOOM_CHECK(N > 0 && C > 0, "bias_gelu sizes must be positive: N", N, "C", C);
  LOOM_CHECK(out != nullptr && inp != nullptr, "bias_gelu_forward: out and inp must be non-null");
  // The sum goes to pre when it is saved, else to out, and gelu then runs in place on it.
  float* sum = pre != nullptr ? pre : out;
#pragma omp parallel for schedule(static)
  for (int i = 0; i < N; ++i) {
    const long row = static_cast<long>(i) * C;
    for (int c = 0; c < C; ++c) sum[row + c] = inp[row + c] + (bias != nullptr ? bias[c] : 0.0f);
  }
  gelu_forward(out, sum, static_cast<long>(N) * C);
}

void bias_backward(float* dbias, const float* dout, int N, int C) {
  LOOM_CHECK(N > 0 && C > 0, "bias_backward sizes must be positive: N", N, "C", C);
  LOOM_CHECK(dbias != nullptr && dout != nullptr, "bias_backward: dbias and dout must be non-null");
  const int num_blocks = (C + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static)
  for (int block = 0; block < num_blocks; ++block) {
    const int c0 = block * kColumnBlock;
    const int c1 = std::min(C, c0 + kColumnBlock);
    float sum[kColumnBlock] = {};
    for (int i = 0; i < N; ++i) {
      const float* d = dout + static_cast<long>(i) * C;  // (C)
      for (int c = c0; c < c1; ++c) sum[c - c0] += d[c];
    }
    for (int c = c0; c < c1; ++c) dbias[c] += sum[c - c0];
  }
}

}  // namespace loom::kernels::cpu
