// AdamW and global-norm pieces on the CPU.
//
// The update mirrors torch.optim.AdamW's single-tensor CPU path operation by operation (scalars
// computed in double as Python does, then used as float; lerp for the first moment; addcmul and
// addcdiv in their own order) so a Loom run and a PyTorch run drift apart as little as possible.
// The element formula itself is in the header, shared with the GPU kernel. sum_of_squares sums
// fixed-size chunks in double and adds the chunk sums in order, so the norm, and therefore the
// clipping factor, is identical for any thread count.
#include "kernels/cpu/adamw.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/base/check.h"

namespace loom::kernels::cpu {
namespace {

constexpr int64_t kSumChunk = 1 << 14;

}  // namespace

AdamWStepConstants adamw_step_constants(const AdamWHyper& hyper) {
  const double lr = hyper.lr;
  const double beta1 = hyper.beta1;
  const double beta2 = hyper.beta2;
  const auto step = static_cast<double>(hyper.step);
  AdamWStepConstants c;
  c.decay = static_cast<float>(1.0 - lr * static_cast<double>(hyper.weight_decay));
  c.lerp_weight = static_cast<float>(1.0 - beta1);
  c.lerp_small = std::fabs(c.lerp_weight) < 0.5f;
  c.beta2 = static_cast<float>(beta2);
  c.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  c.neg_step_size = static_cast<float>(-(lr / (1.0 - std::pow(beta1, step))));
  c.bias_correction2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(beta2, step)));
  c.eps = hyper.eps;
  return c;
}

void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n,
                  const AdamWHyper& hyper) {
  LOOM_CHECK(n >= 0, "adamw: element count", n, "must not be negative");
  LOOM_CHECK(hyper.step >= 1, "adamw: step", hyper.step, "is 1-based and must be >= 1");
  const AdamWStepConstants c = adamw_step_constants(hyper);
  const float grad_scale = hyper.grad_scale;
  const bool scaled = grad_scale != 1.0f;
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float g = scaled ? grad[i] * grad_scale : grad[i];
    adamw_update_element(param[i], m[i], v[i], g, c);
  }
}

void check_adamw_segments(const AdamWSegment* segments, int num_segments, int64_t n) {
  LOOM_CHECK(n >= 0 && num_segments >= 0, "AdamW segments: element count", n, "segments",
             num_segments, "must not be negative");
  int64_t previous_end = 0;
  for (int s = 0; s < num_segments; ++s) {
    const AdamWSegment& segment = segments[s];
    LOOM_CHECK(segment.begin >= previous_end && segment.begin <= segment.end && segment.end <= n,
               "AdamW segments: segment", s, "is [", segment.begin, ",", segment.end,
               ") after an end of", previous_end, "in an arena of", n,
               "(segments must be sorted, disjoint and inside the arena)");
    previous_end = segment.end;
  }
}

void adamw_update_segments(float* master, bf16* params, const float* grad, float* m, float* v,
                           int64_t n, const AdamWSegment* segments, int num_segments,
                           double global_norm, const AdamWArenaHyper& hyper) {
  check_adamw_segments(segments, num_segments, n);
  if (!std::isfinite(global_norm)) return;
  AdamWHyper h;
  h.lr = hyper.lr;
  h.beta1 = hyper.beta1;
  h.beta2 = hyper.beta2;
  h.eps = hyper.eps;
  h.step = hyper.step;
  h.grad_scale = clip_scale(global_norm, hyper.max_norm);
  for (int s = 0; s < num_segments; ++s) {
    const int64_t begin = segments[s].begin;
    const int64_t count = segments[s].end - begin;
    h.weight_decay = segments[s].decay ? hyper.weight_decay : 0.0f;
    adamw_update(master + begin, grad + begin, m + begin, v + begin, count, h);
    if (params == nullptr) continue;
    for (int64_t i = begin; i < begin + count; ++i) params[i] = float_to_bf16(master[i]);
  }
}

double sum_of_squares(const float* x, int64_t n) {
  LOOM_CHECK(n >= 0, "sum_of_squares: element count", n, "must not be negative");
  const int64_t n_chunks = (n + kSumChunk - 1) / kSumChunk;
  std::vector<double> chunk_sums(n_chunks);  // (n_chunks)
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < n_chunks; ++c) {
    const int64_t begin = c * kSumChunk;
    const int64_t end = std::min(n, begin + kSumChunk);
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = begin; i < end; ++i) {
      const auto xi = static_cast<double>(x[i]);
      sum += xi * xi;
    }
    chunk_sums[c] = sum;
  }
  double total = 0.0;
  for (double s : chunk_sums) total += s;
  return total;
}

}  // namespace loom::kernels::cpu
