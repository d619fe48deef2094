// SwiGLU, the elementwise part of Llama's MLP (Hugging Face's LlamaMLP: down(silu(gate(x)) * up(x)),
// silu(g) = g * sigmoid(g)). gate and up come from one fused matmul whose output gu (N, 2F) holds
// [gate (F) | up (F)] per row, so a tensor-parallel rank's gate and up columns stay together.
#pragma once

namespace loom::kernels::cpu {

// out (N, F) = silu(gu[:, :F]) * gu[:, F:], from gu (N, 2F); out is overwritten and must not
// overlap gu.
void swiglu_forward(float* out, const float* gu, int N, int F);

// Overwrites dgu (N, 2F) = [dout * up * silu'(gate) | dout * silu(gate)], from gu (N, 2F) and
// dout (N, F); dgu must not overlap gu or dout.
void swiglu_backward(float* dgu, const float* gu, const float* dout, int N, int F);

}  // namespace loom::kernels::cpu
