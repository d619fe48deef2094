// AdamW with decoupled weight decay, and the pieces of global-norm gradient clipping.
//
// The update is torch.optim.AdamW's, step for step:
//   p *= 1 - lr * weight_decay
//   m = beta1 m + (1 - beta1) g ;  v = beta2 v + (1 - beta2) g^2       (g = grad * grad_scale)
//   p -= (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// Which tensors get weight decay (not biases, not norms) is the caller's choice: it passes
// weight_decay = 0 for those.
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

struct AdamWHyper {
  float lr = 0;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0;
  int64_t step = 1;        // 1-based step count t, for bias correction
  float grad_scale = 1.0f; // multiplies the gradient first (global-norm clipping)
};

// param, grad, m, v (n). param, m, v updated in place.
void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n,
                  const AdamWHyper& hyper);

// Sum of x[i]^2 in double precision, deterministic whatever the thread count.
double sum_of_squares(const float* x, int64_t n);

// torch.nn.utils.clip_grad_norm_'s factor: min(1, max_norm / (global_norm + 1e-6)).
// max_norm <= 0 disables clipping (returns 1).
float clip_scale(double global_norm, float max_norm);

}  // namespace loom::kernels::cpu
