// GELU, tanh approximation (GPT-2's; torch.nn.functional.gelu(x, approximate="tanh")).
#pragma once

namespace loom::kernels::cpu {

// out (N) is overwritten; out may alias inp.
void gelu_forward(float* out, const float* inp, long N);

// Accumulates: dinp (N) += gelu'(inp) * dout.
void gelu_backward(float* dinp, const float* inp, const float* dout, long N);

// The GPU kernel's twin: pre (N, C) = inp + bias (C) (bias null: none; pre null: not saved, or
// alias of inp); out (N, C) = gelu(inp + bias), from the unrounded sum.
void bias_gelu_forward(float* out, float* pre, const float* inp, const float* bias, int N, int C);

// Accumulates: dbias (C) += column sums of dout (N, C). Deterministic: the result does not depend
// on the number of threads.
void bias_backward(float* dbias, const float* dout, int N, int C);

}  // namespace loom::kernels::cpu
