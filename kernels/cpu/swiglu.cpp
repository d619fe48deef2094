// SwiGLU on the CPU: OpenMP over rows, a vectorised loop over each row's F columns.
//
// silu(g) = g * s with s = sigmoid(g) = 1 / (1 + exp(-g)), written around fast_exp (see gelu.cpp
// for why); silu'(g) = s + g s (1 - s) = s (1 + g e s) with e = exp(-g), since 1 - s = e s.
// Neither form cancels in either tail.
#include "kernels/cpu/swiglu.h"

#include "core/base/check.h"
#include "kernels/cpu/fast_exp.h"

namespace loom::kernels::cpu {
namespace {

// Beyond +-kTailX, silu(g) is g or 0 and silu'(g) is 1 or 0 to far below fp32 resolution
// (|g| exp(-|g|) < 1e-33). There the exact tail value is selected: fast_exp clamps its input to
// [-87, 88], and g e s would otherwise be wrong or overflow for huge |g|.
constexpr float kTailX = 80.0f;

void check_sizes(const char* op, int N, int F) {
  LOOM_CHECK(N > 0 && F > 0, op, "sizes must be positive: N", N, "F", F);
}

}  // namespace

void swiglu_forward(float* out, const float* gu, int N, int F) {
  check_sizes("swiglu_forward", N, F);
  LOOM_CHECK(out != nullptr && gu != nullptr, "swiglu_forward: out and gu must be non-null");
#pragma omp parallel for schedule(static)
  for (int i = 0; i < N; ++i) {
    const float* gate = gu + static_cast<long>(i) * 2 * F;  // (F)
    const float* up = gate + F;                              // (F)
    float* o = out + static_cast<long>(i) * F;               // (F)
#pragma omp simd
    for (int c = 0; c < F; ++c) {
      const float g = gate[c];
      const float silu = g / (1.0f + fast_exp(-g));
      o[c] = (g > kTailX ? g : (g < -kTailX ? 0.0f : silu)) * up[c];
    }
  }
}

void swiglu_backward(float* dgu, const float* gu, const float* dout, int N, int F) {
  check_sizes("swiglu_backward", N, F);
  LOOM_CHECK(dgu != nullptr && gu != nullptr && dout != nullptr,
             "swiglu_backward: dgu, gu and dout must be non-null");
#pragma omp parallel for schedule(static)
  for (int i = 0; i < N; ++i) {
    const float* gate = gu + static_cast<long>(i) * 2 * F;  // (F)
    const float* up = gate + F;                              // (F)
    const float* dy = dout + static_cast<long>(i) * F;       // (F)
    float* dgate = dgu + static_cast<long>(i) * 2 * F;       // (F)
    float* dup = dgate + F;                                  // (F)
#pragma omp simd
    for (int c = 0; c < F; ++c) {
      const float g = gate[c];
      const float e = fast_exp(-g);
      const float s = 1.0f / (1.0f + e);
      const float silu = g > kTailX ? g : (g < -kTailX ? 0.0f : g / (1.0f + e));
      const float grad = g > kTailX ? 1.0f : (g < -kTailX ? 0.0f : s * (1.0f + g * e * s));
      dgate[c] = dy[c] * up[c] * grad;
      dup[c] = dy[c] * silu;
    }
  }
}

}  // namespace loom::kernels::cpu
