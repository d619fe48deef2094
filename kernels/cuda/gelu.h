// Bias + GELU (tanh approximation), and the column sums of a bias gradient, on the GPU
// (CPU twin: kernels/cpu/gelu.h). The cuBLASLt matmul can apply bias + GELU in its epilogue
// (kernels/cuda/matmul.h); these kernels are the path for shapes and layouts the epilogue
// does not take, and the reference it is tested against.
//
// Backward convention (llm.c's): gelu_backward's dinp is an activation gradient and is
// OVERWRITTEN; bias_backward's dbias is a parameter gradient and ACCUMULATES (+=). Both are the
// Backend's convention as they stand.
#pragma once

#include "kernels/cuda/common.h"

namespace loom::kernels::cuda {

// pre (N, C) = inp + bias (C) (bias may be null; pre may be null: not saved, or alias inp);
// out (N, C) = gelu(inp + bias). All bf16; the arithmetic in fp32.
void bias_gelu_forward(bf16* out, bf16* pre, const bf16* inp, const bf16* bias, int N, int C,
                       cudaStream_t stream);

// dinp (n) = gelu'(pre) * dout (overwrites; dinp may alias dout). bf16.
void gelu_backward(bf16* dinp, const bf16* pre, const bf16* dout, int64_t n, cudaStream_t stream);

// Floats of scratch bias_backward needs for (N, C).
size_t bias_backward_scratch_floats(int N, int C);

// Accumulates dbias (C) fp32 += column sums of dout (N, C) bf16; deterministic (partial sums per
// block of rows in scratch, then summed in a fixed order).
void bias_backward(float* dbias, const bf16* dout, int N, int C, float* scratch, cudaStream_t stream);

}  // namespace loom::kernels::cuda
