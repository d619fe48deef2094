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

}  // namespace loom::kernels::cpu
