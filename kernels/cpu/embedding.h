// Token + position embedding, forward and backward (CPU reference path).
//
// out[b,t,:] = wte[tokens[b,t], :] + wpe[t, :]. Token ids are checked against the vocabulary:
// an id outside [0, V) throws loom::Error naming the id, its position and V.
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

// out (B, T, C) is overwritten. tokens (B, T); wte (V, C); wpe (>= T, C).
void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                       int B, int T, int C, int V);

// Accumulates: dwte (V, C) += scatter of dout by token; dwpe (>= T, C) += sum over b of dout.
// Deterministic: the result does not depend on the number of threads. dwpe may be null.
void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens,
                        int B, int T, int C);

}  // namespace loom::kernels::cpu
