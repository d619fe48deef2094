// Vocabulary-parallel cross-entropy, with the ranks simulated in one process: the vocabulary is
// cut into shards (including uneven ones), the passes run per shard, the "all-reduces" are done
// here (max, then sum), and losses and gradients must equal a double-precision reference (the
// whole-vocabulary kernel is the one-shard case of the same passes, so it is no independent
// reference). Tolerances: losses 1e-5 relative, gradients 1e-5 relative + 1e-8 absolute (fp32
// sums of up to 50257 exps computed with fast_exp, about 2 ulp each).
#include "kernels/cpu/vocab_parallel_cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cross_entropy.h"
#include "test_util.h"

namespace loom::kernels::cpu {
namespace {

void check_against_reference(int N, int V, const std::vector<int>& shard_sizes, uint32_t seed) {
  std::vector<float> logits = testing::random_floats(static_cast<size_t>(N) * V, seed, -6.0f, 6.0f);
  std::vector<int32_t> targets = testing::random_ints(static_cast<size_t>(N), seed + 1, 0, V);
  for (int n = 0; n < N; n += 4) targets[static_cast<size_t>(n)] = kIgnoreTarget;
  std::vector<float> dlosses = testing::random_floats(static_cast<size_t>(N), seed + 2, 0.1f, 1.0f);

  std::vector<double> ref_losses(static_cast<size_t>(N), 0.0), ref_grad(logits.size(), 0.0);
  for (int n = 0; n < N; ++n) {
    const int32_t t = targets[static_cast<size_t>(n)];
    if (t == kIgnoreTarget) continue;
    const float* x = logits.data() + static_cast<size_t>(n) * V;
    double max = x[0], sum = 0;
    for (int j = 0; j < V; ++j) max = std::max(max, static_cast<double>(x[j]));
    for (int j = 0; j < V; ++j) sum += std::exp(x[j] - max);
    ref_losses[static_cast<size_t>(n)] = max + std::log(sum) - x[t];
    for (int j = 0; j < V; ++j) {
      ref_grad[static_cast<size_t>(n) * V + j] =
          dlosses[static_cast<size_t>(n)] * (std::exp(x[j] - max) / sum - (j == t ? 1.0 : 0.0));
    }
  }

  // Each "rank" owns columns [start, start + size) of every row.
  std::vector<std::vector<float>> shards;
  std::vector<int> starts;
  int start = 0;
  for (int size : shard_sizes) {
    std::vector<float> s(static_cast<size_t>(N) * size);
    for (int n = 0; n < N; ++n) {
      std::copy_n(logits.begin() + static_cast<long>(n) * V + start, size, s.begin() + static_cast<long>(n) * size);
    }
    shards.push_back(std::move(s));
    starts.push_back(start);
    start += size;
  }
  ASSERT_EQ(start, V);
  const size_t R = shards.size();

  std::vector<float> max(static_cast<size_t>(N), -1e30f);
  for (size_t r = 0; r < R; ++r) {
    std::vector<float> local = testing::poisoned(static_cast<size_t>(N));
    vocab_shard_row_max(local.data(), shards[r].data(), N, shard_sizes[r]);
    for (int n = 0; n < N; ++n) max[static_cast<size_t>(n)] = std::max(max[static_cast<size_t>(n)], local[static_cast<size_t>(n)]);
  }
  std::vector<float> sum(static_cast<size_t>(N), 0.0f), target(static_cast<size_t>(N), 0.0f);
  for (size_t r = 0; r < R; ++r) {
    std::vector<float> s = testing::poisoned(static_cast<size_t>(N)), t = testing::poisoned(static_cast<size_t>(N));
    vocab_shard_sum_exp_and_target(s.data(), t.data(), shards[r].data(), targets.data(), max.data(),
                                   N, shard_sizes[r], starts[r]);
    for (int n = 0; n < N; ++n) {
      sum[static_cast<size_t>(n)] += s[static_cast<size_t>(n)];
      target[static_cast<size_t>(n)] += t[static_cast<size_t>(n)];
    }
  }
  std::vector<float> losses = testing::poisoned(static_cast<size_t>(N));
  vocab_parallel_losses(losses.data(), max.data(), sum.data(), target.data(), targets.data(), N);
  EXPECT_TRUE(testing::all_close(losses, ref_losses, 1e-5, 1e-6)) << "N " << N << " V " << V;

  std::vector<float> grad(logits.size(), std::nanf(""));
  for (size_t r = 0; r < R; ++r) {
    // In place over the shard, as the model uses it.
    vocab_shard_cross_entropy_backward(shards[r].data(), shards[r].data(), targets.data(), max.data(),
                                       sum.data(), dlosses.data(), N, shard_sizes[r], starts[r]);
    for (int n = 0; n < N; ++n) {
      std::copy_n(shards[r].begin() + static_cast<long>(n) * shard_sizes[r], shard_sizes[r],
                  grad.begin() + static_cast<long>(n) * V + starts[r]);
    }
  }
  EXPECT_TRUE(testing::all_close(grad, ref_grad, 1e-5, 1e-8)) << "N " << N << " V " << V;
}

TEST(VocabParallelCrossEntropyTest, ShardsMatchADoubleReference) {
  check_against_reference(9, 64, {64}, 1);           // one rank
  check_against_reference(9, 64, {32, 32}, 2);       // tp = 2
  check_against_reference(13, 101, {26, 25, 25, 25}, 3);  // tp = 4, uneven
  check_against_reference(3, 5, {1, 1, 2, 1}, 4);    // tiny shards
  check_against_reference(4, 50257, {12565, 12564, 12564, 12564}, 5);  // GPT-2's vocabulary
}

}  // namespace
}  // namespace loom::kernels::cpu
