// Fused softmax + cross-entropy over a whole vocabulary on the CPU: the one-shard case of the
// vocabulary-parallel passes (kernels/cpu/vocab_parallel_cross_entropy.h), so a single rank and a
// tensor-parallel group run the same arithmetic. This file adds only what a whole vocabulary can
// check: that every target id lies in [-1, V).
#include "kernels/cpu/cross_entropy.h"

#include <vector>

#include "core/base/check.h"
#include "kernels/cpu/vocab_parallel_cross_entropy.h"

namespace loom::kernels::cpu {
namespace {

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
  std::vector<float> stats(3 * static_cast<size_t>(N));  // row max | sum of exps | target logit
  float* max = stats.data();
  float* sum = max + N;
  float* target = sum + N;
  vocab_shard_row_max(max, logits, N, V);
  vocab_shard_sum_exp_and_target(sum, target, logits, targets, max, N, V, 0);
  vocab_parallel_losses(losses, max, sum, target, targets, N);
}

void cross_entropy_backward(float* dlogits, const float* logits, const int32_t* targets,
                            const float* dlosses, int N, int V) {
  check_inputs(targets, N, V);
  std::vector<float> stats(3 * static_cast<size_t>(N));
  float* max = stats.data();
  float* sum = max + N;
  // Both statistics are read from the logits before the backward overwrites them (in place).
  vocab_shard_row_max(max, logits, N, V);
  vocab_shard_sum_exp_and_target(sum, sum + N, logits, targets, max, N, V, 0);
  vocab_shard_cross_entropy_backward(dlogits, logits, targets, max, sum, dlosses, N, V, 0);
}

}  // namespace loom::kernels::cpu
