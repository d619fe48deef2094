// Softmax cross-entropy over the vocabulary on the GPU, writing the logits' gradient in place
// (CPU twins: kernels/cpu/cross_entropy.h and vocab_parallel_cross_entropy.h, same formulas).
//
// Backward convention (llm.c's): the logits' gradient is an activation gradient and is
// OVERWRITTEN, in place of the logits (a caller that wants it elsewhere copies the logits there
// first, as the CUDA backend does). Statistics and losses are overwritten.
//
// Logits rows may be padded (stride >= V, e.g. GPT-2's 50257 rounded up to 50304 for the
// matmul): the padding columns are never read as logits and their gradient is written as 0.
// A target of -1 does not count (loss 0, gradient 0). Statistics are fp32; logits bf16.
//
// fused_cross_entropy is the one-shard case in one kernel: one block per row computes the max and
// the sum of exponentials in one pass (online), the loss, and overwrites the row with
// dloss * (softmax - onehot). The vocab_parallel_* launchers are the three phases of the
// tensor-parallel version (Megatron's), with the two all-reduces between them left to the caller.
#pragma once

#include "kernels/cuda/common.h"

namespace loom::kernels::cuda {

// logits (N, stride) bf16, overwritten by the gradient dloss * (softmax - onehot) (0 in
// ignored rows and in padding columns). losses (N) fp32 = -log softmax[target] (0 if ignored).
// targets (N), each in [0, V) or -1 (the caller validates; any other id gives a NaN loss and no
// one-hot term). dloss is the same for every row.
void fused_cross_entropy(bf16* logits, float* losses, const int32_t* targets, float dloss, int N,
                         int V, int stride, cudaStream_t stream);

// Phase 1: row_max (N) = max over this shard's V_local logits. logits (N, stride).
void vocab_parallel_row_max(float* row_max, const bf16* logits, int N, int V_local, int stride,
                            cudaStream_t stream);
// Phase 2, after the MAX all-reduce of row_max: sum_exp (N) = sum of exp(logit - row_max) over
// this shard; target_logit (N) = the target's logit if this shard owns it
// (vocab_start <= target < vocab_start + V_local), else 0.
void vocab_parallel_sum_exp(float* sum_exp, float* target_logit, const bf16* logits,
                            const int32_t* targets, const float* row_max, int N, int V_local,
                            int stride, int vocab_start, cudaStream_t stream);
// Phase 3, after the SUM all-reduce of sum_exp and target_logit: losses (N) = log sum_exp +
// row_max - target_logit (0 if ignored), and the logits overwritten in place by
// dloss * (exp(logit - row_max) / sum_exp - onehot) (0 in ignored rows and padding columns).
void vocab_parallel_loss_and_grad(bf16* logits, float* losses, const int32_t* targets,
                                  const float* row_max, const float* sum_exp,
                                  const float* target_logit, float dloss, int N, int V_local,
                                  int stride, int vocab_start, cudaStream_t stream);


// Phase 3 split in two, for a caller that wants the losses and the gradient at different times
// (the Backend's vocab_losses and vocab_cross_entropy_backward):
// losses (N) = log sum_exp + row_max - target_logit, 0 where targets[n] == -1 (twin:
// cpu::vocab_parallel_losses) ...
void vocab_parallel_losses(float* losses, const float* row_max, const float* sum_exp,
                           const float* target_logit, const int32_t* targets, int N,
                           cudaStream_t stream);
// ... and the logits (N, stride) overwritten in place by dloss * (softmax - onehot), as
// vocab_parallel_loss_and_grad without the loss (twin: cpu::vocab_shard_cross_entropy_backward).
void vocab_parallel_cross_entropy_backward(bf16* logits, const int32_t* targets,
                                           const float* row_max, const float* sum_exp, float dloss,
                                           int N, int V_local, int stride, int vocab_start,
                                           cudaStream_t stream);

}  // namespace loom::kernels::cuda
