#include "core/optimizer.h"

#include <cmath>

#include "kernels/cpu/adamw.h"

namespace loom {

namespace k = kernels::cpu;

float lr_at_step(int64_t step, int64_t total_steps, float peak_lr, int64_t warmup_steps,
                 float min_ratio) {
  if (step < warmup_steps) {
    return peak_lr * static_cast<float>(step + 1) / static_cast<float>(warmup_steps);
  }
  const int64_t decay_steps = total_steps - warmup_steps;
  if (decay_steps <= 1) return peak_lr;
  double progress = static_cast<double>(step - warmup_steps) / static_cast<double>(decay_steps - 1);
  if (progress > 1) progress = 1;
  const double min_lr = static_cast<double>(peak_lr) * min_ratio;
  return static_cast<float>(min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + std::cos(M_PI * progress)));
}

AdamW::AdamW(std::vector<Parameter>& params, const AdamWSettings& settings)
    : params_(params), settings_(settings) {
  int64_t total = 0;
  for (const Parameter& p : params_) total += p.value.numel();
  m_ = Tensor::zeros({total});
  v_ = Tensor::zeros({total});
}

void AdamW::step(float lr, double grad_norm) {
  ++t_;
  k::AdamWHyper hyper;
  hyper.lr = lr;
  hyper.beta1 = settings_.beta1;
  hyper.beta2 = settings_.beta2;
  hyper.eps = settings_.eps;
  hyper.step = t_;
  hyper.grad_scale = k::clip_scale(grad_norm, settings_.grad_clip);
  int64_t offset = 0;
  for (Parameter& p : params_) {
    hyper.weight_decay = p.decay ? settings_.weight_decay : 0.0f;
    const int64_t n = p.value.numel();
    k::adamw_update(p.value.f32(), p.grad.f32(), m_.f32() + offset, v_.f32() + offset, n, hyper);
    offset += n;
  }
}

}  // namespace loom
