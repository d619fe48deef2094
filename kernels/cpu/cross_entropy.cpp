// Fused softmax + cross-entropy on the CPU.
//
// With V up to ~50k, the exps dominate: forward and backward each take one per logit, so exp is
// fast_exp (kernels/cpu/fast_exp.h) rather than scalar expf, and each row is a few
// streaming passes (max, sum, write) that stay in cache. Rows are independent, so OpenMP splits
// rows and every result is the same whatever the thread count. Targets are validated before the
// parallel loop because an exception cannot leave an OpenMP region.
#include "kernels/cpu/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "core/base/check.h"
#include "kernels/cpu/fast_exp.h"

namespace loom::kernels::cpu {
namespace {


struct RowStats {
  float max;
  float sum;  // sum of exp(x - max)
};

RowStats row_stats(const float* x, int V) {
  float max = x[0];
#pragma omp simd reduction(max : max)
  for (int j = 0; j < V; ++j) max = std::max(max, x[j]);
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int j = 0; j < V; ++j) sum += fast_exp(x[j] - max);
  return {max, sum};
}

void check_inputs(const int32_t* targets, int N, int V) {
  LOOM_CHECK(N > 0 && V > 0, "cross_entropy: sizes must be positive, got N", N, "V", V);
  for (int n = 0; n < N; ++n) {
    LOOM_CHECK(targets[n] >= kIgnoreTarget && targets[n] < V, "cross_entropy: row", n,
               "has target id", targets[n], "outside [0, V) with V", V, "(-1 means ignore)");
  }
}

}  // namespace

void cross_entropy_forward(float* losses, const float* logits, const int32_t* targets, int N,
                           int V) {
  check_inputs(targets, N, V);
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    if (targets[n] == kIgnoreTarget) {
      losses[n] = 0.0f;
      continue;
    }
    const float* x = logits + static_cast<size_t>(n) * V;  // (V)
    const RowStats s = row_stats(x, V);
    losses[n] = static_cast<float>(static_cast<double>(s.max) + std::log(static_cast<double>(s.sum)) -
                                   static_cast<double>(x[targets[n]]));
  }
}

void cross_entropy_backward(float* dlogits, const float* logits, const int32_t* targets,
                            const float* dlosses, int N, int V) {
  check_inputs(targets, N, V);
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    float* dx = dlogits + static_cast<size_t>(n) * V;      // (V)
    const float* x = logits + static_cast<size_t>(n) * V;  // (V)
    const int32_t target = targets[n];
    if (target == kIgnoreTarget) {
      std::fill(dx, dx + V, 0.0f);
      continue;
    }
    const RowStats s = row_stats(x, V);
    const float dloss = dlosses[n];
    const float factor = dloss / s.sum;
    const float max = s.max;
    const float target_logit = x[target];  // read before an in-place write overwrites it
    // omp simd: element j is read before it is written, so in place (dx == x) is safe and
    // needs no runtime alias check to vectorise.
#pragma omp simd
    for (int j = 0; j < V; ++j) dx[j] = fast_exp(x[j] - max) * factor;
    dx[target] = fast_exp(target_logit - max) * factor - dloss;
  }
}

}  // namespace loom::kernels::cpu
