// AdamW over a model's parameters, with global-norm gradient clipping and the learning-rate
// schedule (linear warmup, then cosine decay to a floor).
//
// State (m, v) is fp32 and laid out like the parameter arena, so one buffer serves every tensor.
#pragma once

#include <cstdint>
#include <vector>

#include "core/gpt.h"
#include "core/tensor.h"

namespace loom {

struct AdamWSettings {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
  float grad_clip = 1.0f;  // max global norm; 0 disables
};

// lr at 0-based `step` of `total_steps`: (step+1)/warmup * peak during warmup, then a cosine
// from peak down to peak * min_ratio at the last step.
float lr_at_step(int64_t step, int64_t total_steps, float peak_lr, int64_t warmup_steps,
                 float min_ratio);

class AdamW {
 public:
  AdamW(std::vector<Parameter>& params, const AdamWSettings& settings);

  // One update with learning rate `lr`, clipping by `grad_norm`, the global norm of the
  // gradients over every rank that holds a part of the model (GPT::gradient_norm()).
  void step(float lr, double grad_norm);
  int64_t steps_taken() const { return t_; }

 private:
  std::vector<Parameter>& params_;
  AdamWSettings settings_;
  Tensor m_;  // (total parameters)
  Tensor v_;  // (total parameters)
  int64_t t_ = 0;
};

}  // namespace loom
