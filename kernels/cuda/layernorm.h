// LayerNorm fused with the residual add that precedes it in a pre-LN transformer block, forward
// and backward, on the GPU (CPU twin: kernels/cpu/layernorm.h, residual_layernorm_*); the plain
// LayerNorm and the residual add alone, for where one of the two has no partner.
//
// Backward convention (llm.c's): dweight and dbias are parameter gradients and ACCUMULATE (+=);
// the input's gradient is the residual stream's and ACCUMULATES too (dresidual +=): the residual
// connection adds the branch's gradient to the gradient flowing past it. Forward outputs are
// overwritten.
//
// Forward: residual_out = residual_in + delta (+ delta_bias); out = LN(residual_out) * weight + bias;
// one warp per row, statistics in fp32 (mean and rstd saved for the backward), inputs and outputs
// in bf16. Backward: the gradient of the LayerNorm's input is added to the gradient of the
// residual stream (the other term of the add), and dweight/dbias are summed over rows
// deterministically: per-block partial sums in fp32 scratch, then one pass that adds them in a
// fixed order.
#pragma once

#include "kernels/cuda/common.h"

namespace loom::kernels::cuda {

// residual_out (N, C) = residual_in + delta + delta_bias, where residual_in or delta may be null
// (absent; the first block's LayerNorm reads the embedding alone) and delta_bias (C) may be null.
// out (N, C) = LayerNorm(residual_out) with weight, bias (C); mean, rstd (N) fp32 (null: not
// saved). residual_out may alias residual_in.
void residual_layernorm_forward(bf16* residual_out, bf16* out, float* mean, float* rstd,
                                const bf16* residual_in, const bf16* delta, const bf16* delta_bias,
                                const bf16* weight, const bf16* bias, int N, int C,
                                cudaStream_t stream);

// out (N, C) bf16 = LayerNorm(inp (N, C) bf16) with weight, bias (C) bf16; mean, rstd (N) fp32
// (null: not saved). The fused kernel with nothing to add, so the same arithmetic. out must not
// alias inp. Twin: cpu::layernorm_forward.
void layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* inp, const bf16* weight,
                       const bf16* bias, int N, int C, cudaStream_t stream);

// out (N, C) bf16 = a + b + bias (C), summed in fp32 in that order and rounded once; a, b and
// bias may each be null (absent). out may alias a or b. The residual add where no LayerNorm
// follows (a stage's last block). Twin: cpu::residual_add.
void residual_add(bf16* out, const bf16* a, const bf16* b, const bf16* bias, int N, int C,
                  cudaStream_t stream);

// Floats of scratch layernorm_backward needs for (N, C).
size_t layernorm_backward_scratch_floats(int N, int C);

// Accumulates: dresidual (N, C) bf16 += d LN / d input (the residual stream's gradient);
// dweight, dbias (C) fp32 += sums over rows. dout (N, C) bf16; inp (N, C) the LayerNorm's input
// (residual_out of the forward); mean, rstd of the forward. scratch: layernorm_backward_scratch_floats.
void layernorm_backward(bf16* dresidual, float* dweight, float* dbias, const bf16* dout,
                        const bf16* inp, const bf16* weight, const float* mean, const float* rstd,
                        int N, int C, float* scratch, cudaStream_t stream);

}  // namespace loom::kernels::cuda
