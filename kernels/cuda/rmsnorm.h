// RMSNorm fused with the residual add that precedes it in a pre-norm (Llama) block, forward and
// backward, on the GPU (CPU twin: kernels/cpu/rmsnorm.h); the plain RMSNorm for where there is no
// residual add. The residual add alone is layernorm.h's residual_add.
//
// Backward convention (as layernorm.h): dweight is a parameter gradient and ACCUMULATES (+=); the
// input's gradient is the residual stream's and ACCUMULATES too (dresidual +=). Forward outputs
// are overwritten.
//
// Forward: residual_out = residual_in + delta (+ delta_bias); out = residual_out * rstd * weight
// with rstd = 1 / sqrt(mean(residual_out^2) + eps), as Hugging Face's LlamaRMSNorm; one warp per
// row, statistics in fp32 (rstd saved for the backward), inputs and outputs in bf16. Backward:
// the gradient of the RMSNorm's input is added to the gradient of the residual stream, and
// dweight is summed over rows deterministically: per-block partial sums in fp32 scratch, then one
// pass that adds them in a fixed order.
#pragma once

#include "kernels/cuda/common.h"

namespace loom::kernels::cuda {

// residual_out (N, C) = residual_in + delta + delta_bias, where residual_in or delta may be null
// (absent) and delta_bias (C) may be null. out (N, C) = RMSNorm(residual_out) with weight (C);
// rstd (N) fp32 (null: not saved). residual_out may alias residual_in. eps > 0.
void residual_rmsnorm_forward(bf16* residual_out, bf16* out, float* rstd, const bf16* residual_in,
                              const bf16* delta, const bf16* delta_bias, const bf16* weight,
                              float eps, int N, int C, cudaStream_t stream);

// out (N, C) bf16 = RMSNorm(inp (N, C) bf16) with weight (C) bf16; rstd (N) fp32 (null: not
// saved). The fused kernel with nothing to add, so the same arithmetic. out must not alias inp.
// Twin: cpu::rmsnorm_forward.
void rmsnorm_forward(bf16* out, float* rstd, const bf16* inp, const bf16* weight, float eps, int N,
                     int C, cudaStream_t stream);

// Floats of scratch rmsnorm_backward needs for (N, C).
size_t rmsnorm_backward_scratch_floats(int N, int C);

// Accumulates: dresidual (N, C) bf16 += d RMSNorm / d input (the residual stream's gradient);
// dweight (C) fp32 += a sum over rows. dout (N, C) bf16; inp (N, C) the RMSNorm's input
// (residual_out of the forward); rstd of the forward. scratch: rmsnorm_backward_scratch_floats.
void rmsnorm_backward(bf16* dresidual, float* dweight, const bf16* dout, const bf16* inp,
                      const bf16* weight, const float* rstd, int N, int C, float* scratch,
                      cudaStream_t stream);

}  // namespace loom::kernels::cuda
