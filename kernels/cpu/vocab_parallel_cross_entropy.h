// Cross-entropy over a vocabulary split across tensor-parallel ranks (CPU).
//
// Each rank holds the logits of a contiguous slice of the vocabulary, [vocab_start,
// vocab_start + V_local), for every row; the full-vocabulary logits never exist on one rank. A
// loss needs three numbers per row from all ranks, gathered by two all-reduces between the
// passes below (Megatron's vocab-parallel cross-entropy):
//   1. local row max                          -> all-reduce MAX -> global max m
//   2. local sum of exp(x - m), and the target logit if this rank owns the target (else 0)
//                                              -> all-reduce SUM -> S and x_target
//   3. loss = log S + m - x_target (0 for ignored rows, target -1)
// The backward needs no communication: dlogits = dloss * (exp(x - m) / S - onehot), written in
// place over this rank's logits. cross_entropy_forward/backward are the one-shard case.
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

// row_max (N) = max over this rank's V_local logits of each row. logits (N, V_local).
void vocab_shard_row_max(float* row_max, const float* logits, int N, int V_local);

// With the global row_max: sum_exp (N) = sum of exp(logit - row_max) over this rank's columns;
// target_logit (N) = the target's logit if vocab_start <= target < vocab_start + V_local, else 0
// (also 0 for ignored rows).
void vocab_shard_sum_exp_and_target(float* sum_exp, float* target_logit, const float* logits,
                                    const int32_t* targets, const float* row_max, int N,
                                    int V_local, int vocab_start);

// losses (N) from the reduced statistics; 0 where targets[n] == -1.
void vocab_parallel_losses(float* losses, const float* row_max, const float* sum_exp,
                           const float* target_logit, const int32_t* targets, int N);

// dlogits (N, V_local) = dlosses[n] * (softmax - onehot) for this rank's columns; 0 for ignored
// rows. Overwrites; dlogits may alias logits.
void vocab_shard_cross_entropy_backward(float* dlogits, const float* logits,
                                        const int32_t* targets, const float* row_max,
                                        const float* sum_exp, const float* dlosses, int N,
                                        int V_local, int vocab_start);

}  // namespace loom::kernels::cpu
