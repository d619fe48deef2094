// RMSNorm over the last axis, forward and backward (CPU reference path).
//
// out = x * rstd * weight, with rstd = 1 / sqrt(mean(x^2) + eps) and no bias, as Hugging Face's
// LlamaRMSNorm (computed in fp32). rstd is saved for backward.
#pragma once

namespace loom::kernels::cpu {

// inp, out (N, C); weight (C); rstd (N). out and rstd are overwritten; rstd may be null
// (inference). eps > 0.
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, float eps,
                     int N, int C);

// Accumulates: dinp (N, C) += ..., dweight (C) += ...
// Deterministic: the result does not depend on the number of threads.
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int N, int C);

// The pre-norm block's residual add fused with the RMSNorm after it (the GPU kernel's twin):
// residual_out (N, C) = residual_in + delta + delta_bias, summed in that order; residual_in or
// delta may be null (absent) and delta_bias (C) may be null. Then out (N, C) =
// RMSNorm(residual_out) with weight (C), as rmsnorm_forward (rstd may be null).
// residual_out may alias residual_in; it must not alias out.
void residual_rmsnorm_forward(float* residual_out, float* out, float* rstd,
                              const float* residual_in, const float* delta,
                              const float* delta_bias, const float* weight, float eps, int N,
                              int C);

}  // namespace loom::kernels::cpu
