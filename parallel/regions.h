// The paired communication regions of tensor and sequence parallelism, each defined once with
// its backward (Megatron's f/g and their sequence-parallel counterparts).
//
// Layers call these, never a raw collective. Every pair is conjugate: the backward of one is the
// adjoint of its forward, so that sum over ranks <forward(x), y> == sum over ranks <x, backward(y)>
// (tested). Activations are (N, C) row-major with N = B * T tokens; sequence parallelism splits
// the N rows into tp equal contiguous blocks (token-wise ops such as LayerNorm and the residual
// add do not care which tokens a rank holds, and contiguous blocks make the gathers copies).
//
// Regions move any dtype: bf16 activations pass through them as f32 ones do (a bf16 sum is
// computed in f32 with one rounding per step, by NCCL on GPUs and by the MPI communicator on CPU
// ranks). Below them, the named points where the model's statistics and gradients meet over a
// group: also never a raw collective in the model.
#pragma once

#include <cstddef>

#include "parallel/communicator.h"

namespace loom::parallel {

// Enters a tensor-parallel region whose input every TP rank holds whole (before a column-parallel
// matmul). Forward: identity. Backward: each rank's gradient covers only its columns' use of the
// input, so the gradients are summed over the TP group.
struct CopyToTensorParallel {
  static void forward(Communicator&, void*, size_t, DType) {}
  static void backward(Communicator& tp, void* grad, size_t count, DType dtype);
};

// Leaves a tensor-parallel region whose output is a partial sum on each rank (after a
// row-parallel matmul). Forward: all-reduce. Backward: identity.
struct ReduceFromTensorParallel {
  static void forward(Communicator& tp, void* x, size_t count, DType dtype);
  static void backward(Communicator&, void*, size_t, DType) {}
};

// Sequence parallel, entering the TP region: each rank holds `rows_per_rank` rows of C values
// and the column-parallel matmul needs all rows. Forward: all-gather local (rows, C) into full
// (tp * rows, C). Backward: reduce-scatter d(full) into d(local).
struct GatherFromSequenceParallel {
  static void forward(Communicator& tp, const void* local, void* full, size_t rows_per_rank, size_t C,
                      DType dtype);
  static void backward(Communicator& tp, const void* dfull, void* dlocal, size_t rows_per_rank, size_t C,
                       DType dtype);
};

// Sequence parallel, leaving the TP region: each rank holds a partial sum of all rows (after a
// row-parallel matmul) and keeps the sum of its own block. Forward: reduce-scatter full
// (tp * rows, C) into local (rows, C). Backward: all-gather d(local) into d(full).
struct ScatterToSequenceParallel {
  static void forward(Communicator& tp, const void* full, void* local, size_t rows_per_rank, size_t C,
                      DType dtype);
  static void backward(Communicator& tp, const void* dlocal, void* dfull, size_t rows_per_rank, size_t C,
                       DType dtype);
};

// The softmax statistics of the vocabulary-parallel cross-entropy, each rank holding the logits of
// its slice of the vocabulary for every row. Statistics only: the backward uses them as
// constants, so there is no backward communication.
//   max: row_max (N) f32, each rank's maximum over its slice -> the maximum over the vocabulary.
//   sum: sums (count) f32, per-row partial sums (of exp(logit - max), and of the target's logit,
//        which one rank holds and the others count as 0) -> the sums over the vocabulary.
struct VocabParallelStatistics {
  static void max(Communicator& tp, float* row_max, size_t N);
  static void sum(Communicator& tp, float* sums, size_t count);
};

// Sequence parallelism: a parameter every TP rank holds whole but applies to its own token rows
// only (LayerNorm gains and biases, wpe) gets from each rank the gradient of those rows. Once the
// step's gradients are complete the parts are summed over the TP group, so every rank takes the
// same update.
struct SequenceParallelGradients {
  static void sum(Communicator& tp, float* grad, size_t count);
};

// Tied input and output embeddings on different pipeline stages: the first stage holds wte, the
// last a copy for the output projection. After the pipeline has drained, the copies' gradients
// are summed over the embedding group (first + last stage), so both take the same update.
struct TiedEmbeddingGradients {
  static void sum(Communicator& embedding, float* grad, size_t count);
};

}  // namespace loom::parallel
