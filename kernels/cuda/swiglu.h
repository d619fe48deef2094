// SwiGLU, the elementwise part of Llama's MLP, on the GPU (CPU twin: kernels/cpu/swiglu.h):
// gu (N, 2F) holds [gate (F) | up (F)] per row, the fused gate and up matmul's output.
//
// Backward convention (llm.c's): swiglu_backward's dgu is an activation gradient and is
// OVERWRITTEN, the Backend's convention.
#pragma once

#include "kernels/cuda/common.h"

namespace loom::kernels::cuda {

// out (N, F) = silu(gu[:, :F]) * gu[:, F:], silu(g) = g * sigmoid(g). bf16; the arithmetic in
// fp32. out must not overlap gu.
void swiglu_forward(bf16* out, const bf16* gu, int N, int F, cudaStream_t stream);

// dgu (N, 2F) = [dout * up * silu'(gate) | dout * silu(gate)] (overwrites), from gu (N, 2F) and
// dout (N, F). bf16; fp32 arithmetic. dgu must not overlap gu or dout.
void swiglu_backward(bf16* dgu, const bf16* gu, const bf16* dout, int N, int F, cudaStream_t stream);

}  // namespace loom::kernels::cuda
