// GPU cross-entropy (fused, and the three vocab-parallel phases with a 2-shard split simulated on
// one GPU) against the CPU twins, which see the same bf16-rounded logits without row padding; and
// phase 3 split into its losses and its gradient.
//
// Tolerances:
// - row max and the target logit: exact (a max and a copy of bf16 values).
// - sums of exps and losses: rtol 1e-5, atol 1e-4. Both sides sum up to 50257 fp32 terms in
//   different orders with different exp implementations (2 ulp each); the CPU adds ~3000 terms
//   per SIMD lane in sequence, whose rounding drift reaches ~1e-5 relative; a loss moves by the
//   relative error of its sum.
// - gradients: rtol 2^-7, atol 1e-10. Before rounding both agree to ~1e-5 relative, but the
//   kernel rounds to bf16, where a value near a rounding boundary can land one bf16 ulp (at most
//   2^-7 relative) away from the bf16-rounded CPU value.
// - padding columns, ignored rows: exactly 0.
#include "kernels/cuda/cross_entropy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/vocab_parallel_cross_entropy.h"

namespace loom::kernels::cuda {
namespace {

using loom::testing::all_close;
using loom::testing::bf16_rounded;
using loom::testing::gpu;
using loom::testing::poisoned;
using loom::testing::random_floats;
using loom::testing::random_ints;

constexpr double kSumRtol = 1e-5;
constexpr double kLossRtol = 1e-5;
constexpr double kLossAtol = 1e-4;
constexpr double kGradRtol = 1.0 / 128;
constexpr double kGradAtol = 1e-10;
constexpr float kPadding = 1000.0f;  // a padding column read as a logit would dominate the row
constexpr float kDloss = 0.37f;

struct Case {
  int N, V, stride;
};

std::string name(const Case& c) {
  return "N " + std::to_string(c.N) + " V " + std::to_string(c.V) + " stride " +
         std::to_string(c.stride);
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (int N : {1, 7, 1000}) {
    const std::pair<int, int> shapes[] = {{5, 5},       {5, 8},         {1000, 1000},
                                           {1000, 1003}, {50257, 50304}, {50257, 50257}};
    for (auto [V, stride] : shapes) out.push_back({N, V, stride});
  }
  return out;
}

// bf16-exact logits in [-8, 8) on columns [0, V) of (N, stride) rows; kPadding beyond V.
std::vector<float> padded_logits(const Case& c, uint32_t seed) {
  const auto values = bf16_rounded(random_floats(static_cast<size_t>(c.N) * c.V, seed, -8, 8));
  std::vector<float> rows(static_cast<size_t>(c.N) * c.stride, kPadding);
  for (int n = 0; n < c.N; ++n) {
    std::copy_n(values.begin() + static_cast<int64_t>(n) * c.V, c.V,
                rows.begin() + static_cast<int64_t>(n) * c.stride);
  }
  return rows;
}

// Columns [begin, begin + count) of every (N, stride) row, as (N, count).
std::vector<float> columns(const std::vector<float>& rows, int N, int stride, int begin,
                           int count) {
  std::vector<float> out(static_cast<size_t>(N) * count);
  for (int n = 0; n < N; ++n) {
    std::copy_n(rows.begin() + static_cast<int64_t>(n) * stride + begin, count,
                out.begin() + static_cast<int64_t>(n) * count);
  }
  return out;
}

// Targets in [0, V) with every 4th row ignored, and the first and last columns among them.
std::vector<int32_t> make_targets(const Case& c, uint32_t seed) {
  auto targets = random_ints(static_cast<size_t>(c.N), seed, 0, c.V);
  if (c.N > 1) targets[0] = c.V - 1;
  if (c.N > 2) targets[1] = 0;
  for (int n = 3; n < c.N; n += 4) targets[n] = cpu::kIgnoreTarget;
  return targets;
}

// Checks columns [V, stride) are exactly 0 and returns columns [0, V).
std::vector<float> checked_unpadded(const std::vector<float>& rows, int N, int V, int stride) {
  for (int n = 0; n < N; ++n) {
    for (int j = V; j < stride; ++j) {
      const float g = rows[static_cast<size_t>(n) * stride + j];
      EXPECT_EQ(g, 0.0f) << "padding column " << j << " of row " << n;
      if (g != 0.0f) return {};
    }
  }
  return columns(rows, N, stride, 0, V);
}

struct Expected {
  std::vector<float> losses, grad;  // (N), (N, V) bf16-rounded
};

Expected cpu_expected(const std::vector<float>& logits, const std::vector<int32_t>& targets, int N,
                      int V) {
  Expected e{std::vector<float>(N), logits};
  const std::vector<float> dlosses(N, kDloss);
  cpu::cross_entropy_forward(e.losses.data(), logits.data(), targets.data(), N, V);
  cpu::cross_entropy_backward(e.grad.data(), logits.data(), targets.data(), dlosses.data(), N, V);
  e.grad = bf16_rounded(std::move(e.grad));
  return e;
}

void expect_ignored_rows_zero(const std::vector<float>& losses, const std::vector<float>& grad,
                              const std::vector<int32_t>& targets, int V) {
  for (size_t n = 0; n < targets.size(); ++n) {
    if (targets[n] != cpu::kIgnoreTarget) continue;
    EXPECT_EQ(losses[n], 0.0f) << "ignored row " << n;
    for (int j = 0; j < V; ++j) ASSERT_EQ(grad[n * V + j], 0.0f) << "ignored row " << n;
  }
}

TEST(CrossEntropyCudaTest, FusedMatchesCpuInPlace) {
  LOOM_SKIP_WITHOUT_GPU();
  auto& ctx = gpu();
  for (const Case& c : cases()) {
    SCOPED_TRACE(name(c));
    const auto rows = padded_logits(c, 1);
    const auto targets = make_targets(c, 2);
    Tensor logits = loom::cuda::upload(ctx, rows, Shape{c.N, c.stride}, DType::kBF16);
    Tensor target_ids = loom::cuda::upload(ctx, targets, Shape{c.N});
    Tensor losses = loom::cuda::upload(ctx, poisoned(c.N), Shape{c.N});
    fused_cross_entropy(logits.bf16_data(), losses.f32(), target_ids.i32(), kDloss, c.N, c.V,
                        c.stride, ctx.stream());
    const auto got_losses = loom::cuda::download_floats(ctx, losses);
    const auto got_grad =
        checked_unpadded(loom::cuda::download_floats(ctx, logits), c.N, c.V, c.stride);
    const Expected e = cpu_expected(columns(rows, c.N, c.stride, 0, c.V), targets, c.N, c.V);
    EXPECT_TRUE(all_close(got_losses, e.losses, kLossRtol, kLossAtol));
    EXPECT_TRUE(all_close(got_grad, e.grad, kGradRtol, kGradAtol));
    if (!got_grad.empty()) expect_ignored_rows_zero(got_losses, got_grad, targets, c.V);
  }
}

// One shard's slice of the rows: columns [start, start + V_local) as (N, stride_local) rows.
struct Shard {
  int start, V_local, stride;
  std::vector<float> compact;  // (N, V_local)
  Tensor logits;               // (N, stride) bf16
};

TEST(CrossEntropyCudaTest, VocabParallelTwoShardsMatchCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  auto& ctx = gpu();
  for (const Case& c : cases()) {
    SCOPED_TRACE(name(c));
    const auto rows = padded_logits(c, 3);
    const auto targets = make_targets(c, 4);
    const int N = c.N;
    Tensor target_ids = loom::cuda::upload(ctx, targets, Shape{N});
    std::vector<Shard> shards;
    const std::pair<int, int> slices[] = {{0, c.V / 2}, {c.V / 2, c.V - c.V / 2}};
    for (auto [start, count] : slices) {
      // Unpadded shards where the full rows are, else padded to a multiple of 8 (vector path).
      const int stride = c.stride == c.V ? count : (count + 7) / 8 * 8;
      Shard s{start, count, stride, columns(rows, N, c.stride, start, count), Tensor()};
      std::vector<float> padded(static_cast<size_t>(N) * stride, kPadding);
      for (int n = 0; n < N; ++n) {
        std::copy_n(s.compact.begin() + static_cast<int64_t>(n) * count, count,
                    padded.begin() + static_cast<int64_t>(n) * stride);
      }
      s.logits = loom::cuda::upload(ctx, padded, Shape{N, stride}, DType::kBF16);
      shards.push_back(std::move(s));
    }

    // Phase 1, then the MAX all-reduce on the host.
    std::vector<float> row_max(N, -1e30f);
    for (const Shard& s : shards) {
      Tensor shard_max = loom::cuda::upload(ctx, poisoned(N), Shape{N});
      vocab_parallel_row_max(shard_max.f32(), s.logits.bf16_data(), N, s.V_local, s.stride,
                             ctx.stream());
      const auto got = loom::cuda::download_floats(ctx, shard_max);
      std::vector<float> expected(N);
      cpu::vocab_shard_row_max(expected.data(), s.compact.data(), N, s.V_local);
      EXPECT_TRUE(all_close(got, expected, 0, 0)) << "row max of shard at " << s.start;
      for (int n = 0; n < N; ++n) row_max[n] = std::max(row_max[n], got[n]);
    }
    Tensor global_max = loom::cuda::upload(ctx, row_max, Shape{N});

    // Phase 2, then the SUM all-reduce on the host.
    std::vector<float> sum_exp(N, 0.0f), target_logit(N, 0.0f);
    for (const Shard& s : shards) {
      Tensor shard_sum = loom::cuda::upload(ctx, poisoned(N), Shape{N});
      Tensor shard_target = loom::cuda::upload(ctx, poisoned(N), Shape{N});
      vocab_parallel_sum_exp(shard_sum.f32(), shard_target.f32(), s.logits.bf16_data(),
                             target_ids.i32(), global_max.f32(), N, s.V_local, s.stride, s.start,
                             ctx.stream());
      const auto got_sum = loom::cuda::download_floats(ctx, shard_sum);
      const auto got_target = loom::cuda::download_floats(ctx, shard_target);
      std::vector<float> expected_sum(N), expected_target(N);
      cpu::vocab_shard_sum_exp_and_target(expected_sum.data(), expected_target.data(),
                                          s.compact.data(), targets.data(), row_max.data(), N,
                                          s.V_local, s.start);
      EXPECT_TRUE(all_close(got_sum, expected_sum, kSumRtol, 0)) << "shard at " << s.start;
      EXPECT_TRUE(all_close(got_target, expected_target, 0, 0)) << "shard at " << s.start;
      for (int n = 0; n < N; ++n) {
        sum_exp[n] += got_sum[n];
        target_logit[n] += got_target[n];
      }
    }
    Tensor global_sum = loom::cuda::upload(ctx, sum_exp, Shape{N});
    Tensor global_target = loom::cuda::upload(ctx, target_logit, Shape{N});

    // Phase 3 on each shard; the gradient slices together are the full row's.
    const Expected e = cpu_expected(columns(rows, N, c.stride, 0, c.V), targets, N, c.V);
    for (Shard& s : shards) {
      Tensor losses = loom::cuda::upload(ctx, poisoned(N), Shape{N});
      vocab_parallel_loss_and_grad(s.logits.bf16_data(), losses.f32(), target_ids.i32(),
                                   global_max.f32(), global_sum.f32(), global_target.f32(),
                                   kDloss, N, s.V_local, s.stride, s.start, ctx.stream());
      const auto got_losses = loom::cuda::download_floats(ctx, losses);
      const auto got_grad =
          checked_unpadded(loom::cuda::download_floats(ctx, s.logits), N, s.V_local, s.stride);
      EXPECT_TRUE(all_close(got_losses, e.losses, kLossRtol, kLossAtol)) << "shard at " << s.start;
      EXPECT_TRUE(all_close(got_grad, columns(e.grad, N, c.V, s.start, s.V_local), kGradRtol,
                            kGradAtol))
          << "shard at " << s.start;
      if (!got_grad.empty()) expect_ignored_rows_zero(got_losses, got_grad, targets, s.V_local);
    }
  }
}

// Phase 3 split in two: the losses alone against the CPU twin on the same statistics, and the
// gradient alone bit for bit what the combined kernel writes (the same code path without a loss).
TEST(CrossEntropyCudaTest, LossesAndGradientAloneMatchPhaseThree) {
  LOOM_SKIP_WITHOUT_GPU();
  auto& ctx = gpu();
  for (const Case& c : cases()) {
    SCOPED_TRACE(name(c));
    const int N = c.N;
    const auto rows = padded_logits(c, 5);
    const auto targets = make_targets(c, 6);
    Tensor target_ids = loom::cuda::upload(ctx, targets, Shape{N});
    Tensor logits[2] = {loom::cuda::upload(ctx, rows, Shape{N, c.stride}, DType::kBF16),
                        loom::cuda::upload(ctx, rows, Shape{N, c.stride}, DType::kBF16)};
    Tensor row_max = loom::cuda::upload(ctx, poisoned(N), Shape{N});
    Tensor sum_exp = loom::cuda::upload(ctx, poisoned(N), Shape{N});
    Tensor target_logit = loom::cuda::upload(ctx, poisoned(N), Shape{N});
    vocab_parallel_row_max(row_max.f32(), logits[0].bf16_data(), N, c.V, c.stride, ctx.stream());
    vocab_parallel_sum_exp(sum_exp.f32(), target_logit.f32(), logits[0].bf16_data(), target_ids.i32(),
                           row_max.f32(), N, c.V, c.stride, 0, ctx.stream());

    Tensor losses = loom::cuda::upload(ctx, poisoned(N), Shape{N});
    vocab_parallel_losses(losses.f32(), row_max.f32(), sum_exp.f32(), target_logit.f32(), target_ids.i32(), N,
                          ctx.stream());
    const auto stats_max = loom::cuda::download_floats(ctx, row_max);
    const auto stats_sum = loom::cuda::download_floats(ctx, sum_exp);
    const auto stats_target = loom::cuda::download_floats(ctx, target_logit);
    std::vector<float> expected_losses(N);
    cpu::vocab_parallel_losses(expected_losses.data(), stats_max.data(), stats_sum.data(), stats_target.data(),
                               targets.data(), N);
    EXPECT_TRUE(all_close(loom::cuda::download_floats(ctx, losses), expected_losses, kLossRtol, kLossAtol));

    Tensor combined_losses = loom::cuda::upload(ctx, poisoned(N), Shape{N});
    vocab_parallel_loss_and_grad(logits[0].bf16_data(), combined_losses.f32(), target_ids.i32(), row_max.f32(),
                                 sum_exp.f32(), target_logit.f32(), kDloss, N, c.V, c.stride, 0, ctx.stream());
    vocab_parallel_cross_entropy_backward(logits[1].bf16_data(), target_ids.i32(), row_max.f32(), sum_exp.f32(),
                                          kDloss, N, c.V, c.stride, 0, ctx.stream());
    const auto combined = loom::cuda::download_floats(ctx, logits[0]);
    const auto alone = loom::cuda::download_floats(ctx, logits[1]);
    EXPECT_EQ(0, std::memcmp(combined.data(), alone.data(), sizeof(float) * combined.size()));
    EXPECT_TRUE(all_close(loom::cuda::download_floats(ctx, combined_losses),
                          loom::cuda::download_floats(ctx, losses), 0, 0));
  }
}

TEST(CrossEntropyCudaTest, RejectsBadShapes) {
  LOOM_SKIP_WITHOUT_GPU();
  auto& ctx = gpu();
  EXPECT_THROW(fused_cross_entropy(nullptr, nullptr, nullptr, 1.0f, 1, 10, 9, ctx.stream()),
               Error);
  EXPECT_THROW(vocab_parallel_row_max(nullptr, nullptr, 1, 0, 8, ctx.stream()), Error);
}

}  // namespace
}  // namespace loom::kernels::cuda
