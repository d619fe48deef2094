// GELU, tanh approximation (GPT-2's; torch.nn.functional.gelu(x, approximate="tanh")).
#pragma once

namespace loom::kernels::cpu {

// out (N) is overwritten; out may alias inp.
void gelu_forward(float* out, const float* inp, long N);

// Accumulates: dinp (N) += gelu'(inp) * dout.
void gelu_backward(float* dinp, const float* inp, const float* dout, long N);

}  // namespace loom::kernels::cpu
