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

// out (N, C) = a + b + bias (C), summed in that order; a or b may be null (absent), bias may be
// null. out may alias a or b. The residual add where no LayerNorm follows it.
void residual_add(float* out, const float* a, const float* b, const float* bias, int N, int C);

// The pre-LN block's residual add fused with the LayerNorm after it (the GPU kernel's twin):
// residual_out (N, C) = residual_in + delta + delta_bias, summed in that order; residual_in or
// delta may be null (absent) and delta_bias (C) may be null. Then out (N, C) =
// LayerNorm(residual_out) with weight, bias (C), as layernorm_forward (mean, rstd may be null).
// residual_out may alias residual_in; it must not alias out.
void residual_layernorm_forward(float* residual_out, float* out, float* mean, float* rstd,
                                const float* residual_in, const float* delta,
                                const float* delta_bias, const float* weight, const float* bias,
                                int N, int C);

}  // namespace loom::kernels::cpu
