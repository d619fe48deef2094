// Fused softmax + cross-entropy over a whole vocabulary (CPU reference path); the one-shard case
// of kernels/cpu/vocab_parallel_cross_entropy.h.
//
// Probabilities are never stored: the forward keeps only one loss per row, and the backward
// recomputes each row's max and normaliser and writes the gradient of the logits in place.
// A target of -1 marks a position that does not count (loss 0, gradient 0), like PyTorch's
// ignore_index=-1. A target >= V throws loom::Error naming the row, the id and V.
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

constexpr int32_t kIgnoreTarget = -1;

// logits (N, V); targets (N); losses (N) overwritten: -log softmax(logits[n])[targets[n]].
void cross_entropy_forward(float* losses, const float* logits, const int32_t* targets, int N,
                           int V);

// dlogits (N, V) = dlosses[n] * (softmax(logits[n]) - onehot(targets[n])), 0 for ignored rows.
// Overwrites (does not accumulate); dlogits may alias logits (in place). dlosses (N).
void cross_entropy_backward(float* dlogits, const float* logits, const int32_t* targets,
                            const float* dlosses, int N, int V);

}  // namespace loom::kernels::cpu
