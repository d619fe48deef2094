// The per-rank passes of vocabulary-parallel cross-entropy. Rows are independent, so OpenMP
// splits rows and results do not depend on the thread count; exps use fast_exp as the
// single-rank kernel does. Target ids are validated by the caller against the whole vocabulary
// (a rank sees only its slice and cannot tell a bad id from another rank's).
#include "kernels/cpu/vocab_parallel_cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "core/base/check.h"
#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/fast_exp.h"

namespace loom::kernels::cpu {

void vocab_shard_row_max(float* row_max, const float* logits, int N, int V_local) {
  LOOM_CHECK(N > 0 && V_local > 0, "vocab_shard_row_max: sizes must be positive, got N", N,
             "V_local", V_local);
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const float* x = logits + static_cast<size_t>(n) * V_local;  // (V_local)
    float max = x[0];
#pragma omp simd reduction(max : max)
    for (int j = 0; j < V_local; ++j) max = std::max(max, x[j]);
    row_max[n] = max;
  }
}

void vocab_shard_sum_exp_and_target(float* sum_exp, float* target_logit, const float* logits,
                                    const int32_t* targets, const float* row_max, int N,
                                    int V_local, int vocab_start) {
  LOOM_CHECK(N > 0 && V_local > 0 && vocab_start >= 0, "vocab_shard_sum_exp_and_target: N", N,
             "V_local", V_local, "vocab_start", vocab_start);
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const float* x = logits + static_cast<size_t>(n) * V_local;  // (V_local)
    const float max = row_max[n];
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < V_local; ++j) sum += fast_exp(x[j] - max);
    sum_exp[n] = sum;
    const int32_t local = targets[n] - vocab_start;
    const bool mine = targets[n] != kIgnoreTarget && local >= 0 && local < V_local;
    target_logit[n] = mine ? x[local] : 0.0f;
  }
}

void vocab_parallel_losses(float* losses, const float* row_max, const float* sum_exp,
                           const float* target_logit, const int32_t* targets, int N) {
  LOOM_CHECK(N > 0, "vocab_parallel_losses: N", N, "must be positive");
  for (int n = 0; n < N; ++n) {
    losses[n] = targets[n] == kIgnoreTarget
                    ? 0.0f
                    : static_cast<float>(static_cast<double>(row_max[n]) +
                                         std::log(static_cast<double>(sum_exp[n])) -
                                         static_cast<double>(target_logit[n]));
  }
}

void vocab_shard_cross_entropy_backward(float* dlogits, const float* logits,
                                        const int32_t* targets, const float* row_max,
                                        const float* sum_exp, const float* dlosses, int N,
                                        int V_local, int vocab_start) {
  LOOM_CHECK(N > 0 && V_local > 0 && vocab_start >= 0,
             "vocab_shard_cross_entropy_backward: N", N, "V_local", V_local, "vocab_start",
             vocab_start);
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    float* dx = dlogits + static_cast<size_t>(n) * V_local;      // (V_local)
    const float* x = logits + static_cast<size_t>(n) * V_local;  // (V_local)
    if (targets[n] == kIgnoreTarget) {
      std::fill(dx, dx + V_local, 0.0f);
      continue;
    }
    const float max = row_max[n];
    const float factor = dlosses[n] / sum_exp[n];
    const int32_t local = targets[n] - vocab_start;
    const bool mine = local >= 0 && local < V_local;
    const float target_x = mine ? x[local] : 0.0f;  // read before an in-place write
#pragma omp simd
    for (int j = 0; j < V_local; ++j) dx[j] = fast_exp(x[j] - max) * factor;
    if (mine) dx[local] = fast_exp(target_x - max) * factor - dlosses[n];
  }
}

}  // namespace loom::kernels::cpu
