// AdamW with decoupled weight decay, and the pieces of global-norm gradient clipping.
//
// The update is torch.optim.AdamW's, step for step:
//   p *= 1 - lr * weight_decay
//   m = beta1 m + (1 - beta1) g ;  v = beta2 v + (1 - beta2) g^2       (g = grad * grad_scale)
//   p -= (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// Which tensors get weight decay (not biases, not norms) is the caller's choice: it passes
// weight_decay = 0 for those.
//
// The per-element formula (adamw_update_element) and the clipping factor (clip_scale) are also
// compiled into the GPU kernel (kernels/cuda/adamw.h), so both devices run one formula; the
// arena types AdamWSegment and AdamWArenaHyper are shared with it too.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/base/dtype.h"  // bf16, and LOOM_HOST_DEVICE for the functions both devices run

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
LOOM_HOST_DEVICE inline float clip_scale(double global_norm, float max_norm) {
  if (max_norm <= 0.0f) return 1.0f;
  const double factor = static_cast<double>(max_norm) / (global_norm + 1e-6);
  return static_cast<float>(factor < 1.0 ? factor : 1.0);
}

// The scalars of one step, computed in double as Python does and then used as float.
struct AdamWStepConstants {
  float decay;                  // 1 - lr * weight_decay
  float lerp_weight;            // 1 - beta1
  bool lerp_small;              // torch's lerp picks its form by |weight| < 0.5
  float beta2;
  float one_minus_beta2;
  float neg_step_size;          // -lr / (1 - beta1^t)
  float bias_correction2_sqrt;  // sqrt(1 - beta2^t)
  float eps;
};
AdamWStepConstants adamw_step_constants(const AdamWHyper& hyper);

// One element's update in torch's operation order (lerp for m; addcmul and addcdiv in their own
// order). g is the already scaled gradient.
LOOM_HOST_DEVICE inline void adamw_update_element(float& param, float& m, float& v, float g,
                                                  const AdamWStepConstants& c) {
  const float p = param * c.decay;
  const float m_old = m;
  const float m_new = c.lerp_small ? m_old + c.lerp_weight * (g - m_old)
                                   : g + (c.lerp_weight - 1.0f) * (g - m_old);
  const float v_new = v * c.beta2 + c.one_minus_beta2 * g * g;
  const float denom = std::sqrt(v_new) / c.bias_correction2_sqrt + c.eps;
  m = m_new;
  v = v_new;
  param = p + c.neg_step_size * m_new / denom;  // addcdiv: self + value * t1 / t2
}

// A parameter's run of elements in a flat arena, and whether weight decay applies to it.
struct AdamWSegment {
  int64_t begin = 0;  // first element of the run in the arena
  int64_t end = 0;    // one past its last
  int decay = 0;      // 1: weight decay applies
};

// An update over a whole arena: weight_decay applies to the segments with decay, and the
// gradient is scaled by clip_scale(global norm, max_norm).
struct AdamWArenaHyper {
  float lr = 0;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0;  // for the segments with decay
  int64_t step = 1;        // 1-based, for bias correction
  float max_norm = 0;      // clip to this global norm; 0: no clipping
};

// Throws loom::Error unless the segments are sorted by begin, disjoint and inside [0, n).
void check_adamw_segments(const AdamWSegment* segments, int num_segments, int64_t n);

// The twin of the GPU arena update (kernels/cuda/adamw.h): segments sorted by begin, disjoint,
// within [0, n); elements outside every segment are left alone. master, m, v (n) fp32 updated;
// params (n) bf16 = master rounded to nearest even (null: no bf16 copy, fp32 training); grad (n).
// The clipping factor is computed from global_norm in double (the CPU's norm; the GPU passes its
// f32 one). A global_norm that is not finite leaves everything unchanged (a skipped step).
void adamw_update_segments(float* master, bf16* params, const float* grad, float* m, float* v,
                           int64_t n, const AdamWSegment* segments, int num_segments,
                           double global_norm, const AdamWArenaHyper& hyper);

}  // namespace loom::kernels::cpu
