// AdamW and global-norm pieces on the CPU.
//
// The update mirrors torch.optim.AdamW's single-tensor CPU path operation by operation (scalars
// computed in double as Python does, then used as float; lerp for the first moment; addcmul and
// addcdiv in their own order) so a Loom run and a PyTorch run drift apart as little as possible.
// sum_of_squares sums fixed-size chunks in double and adds the chunk sums in order, so the norm,
// and therefore the clipping factor, is identical for any thread count.
#include "kernels/cpu/adamw.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/base/check.h"

namespace loom::kernels::cpu {
namespace {

constexpr int64_t kSumChunk = 1 << 14;

}  // namespace

void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n,
                  const AdamWHyper& hyper) {
  LOOM_CHECK(n >= 0, "adamw: element count", n, "must not be negative");
  LOOM_CHECK(hyper.step >= 1, "adamw: step", hyper.step, "is 1-based and must be >= 1");
  const double lr = hyper.lr;
  const double beta1 = hyper.beta1;
  const double beta2 = hyper.beta2;
  const auto step = static_cast<double>(hyper.step);
  const auto decay = static_cast<float>(1.0 - lr * static_cast<double>(hyper.weight_decay));
  const auto lerp_weight = static_cast<float>(1.0 - beta1);
  const bool lerp_small = std::fabs(lerp_weight) < 0.5f;  // torch's lerp picks a form by weight
  const auto beta2_f = static_cast<float>(beta2);
  const auto one_minus_beta2 = static_cast<float>(1.0 - beta2);
  const double bias_correction1 = 1.0 - std::pow(beta1, step);
  const double bias_correction2 = 1.0 - std::pow(beta2, step);
  const auto neg_step_size = static_cast<float>(-(lr / bias_correction1));
  const auto bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  const float eps = hyper.eps;
  const float grad_scale = hyper.grad_scale;
  const bool scaled = grad_scale != 1.0f;
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float g = scaled ? grad[i] * grad_scale : grad[i];
    const float p = param[i] * decay;
    const float m_old = m[i];
    const float m_new = lerp_small ? m_old + lerp_weight * (g - m_old)
                                   : g + (lerp_weight - 1.0f) * (g - m_old);
    const float v_new = v[i] * beta2_f + one_minus_beta2 * g * g;
    const float denom = std::sqrt(v_new) / bias_correction2_sqrt + eps;
    m[i] = m_new;
    v[i] = v_new;
    param[i] = p + neg_step_size * m_new / denom;  // addcdiv: self + value * t1 / t2
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

float clip_scale(double global_norm, float max_norm) {
  if (max_norm <= 0.0f) return 1.0f;
  const double factor = static_cast<double>(max_norm) / (global_norm + 1e-6);
  return static_cast<float>(std::min(1.0, factor));
}

}  // namespace loom::kernels::cpu
