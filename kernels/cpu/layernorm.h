// LayerNorm over the last axis, forward and backward (CPU reference path).
//
// out = (x - mean) * rstd * weight + bias, with rstd = 1 / sqrt(var + 1e-5) and the biased
// variance, as torch.nn.LayerNorm. mean and rstd are saved for backward.
#pragma once

namespace loom::kernels::cpu {

constexpr float kLayerNormEps = 1e-5f;

// inp, out (N, C); weight, bias (C); mean, rstd (N). out, mean, rstd are overwritten.
// mean and rstd may be null (inference).
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                       const float* weight, const float* bias, int N, int C);

// Accumulates: dinp (N, C) += ..., dweight (C) += ..., dbias (C) += ...
// Deterministic: the result does not depend on the number of threads.
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean,
                        const float* rstd, int N, int C);

}  // namespace loom::kernels::cpu
