// The paired communication regions of tensor and sequence parallelism, each defined once with
// its backward (Megatron's f/g and their sequence-parallel counterparts).
//
// Layers call these, never a raw collective. Every pair is conjugate: the backward of one is the
// adjoint of its forward, so that sum over ranks <forward(x), y> == sum over ranks <x, backward(y)>
// (tested). Activations are (N, C) row-major with N = B * T tokens; sequence parallelism splits
// the N rows into tp equal contiguous blocks (token-wise ops such as LayerNorm and the residual
// add do not care which tokens a rank holds, and contiguous blocks make the gathers copies).
#pragma once

#include <cstddef>

#include "parallel/communicator.h"

namespace loom::parallel {

// Enters a tensor-parallel region whose input every TP rank holds whole (before a column-parallel
// matmul). Forward: identity. Backward: each rank's gradient covers only its columns' use of the
// input, so the gradients are summed over the TP group.
struct CopyToTensorParallel {
  static void forward(Communicator&, float*, size_t) {}
  static void backward(Communicator& tp, float* grad, size_t count);
};

// Leaves a tensor-parallel region whose output is a partial sum on each rank (after a
// row-parallel matmul). Forward: all-reduce. Backward: identity.
struct ReduceFromTensorParallel {
  static void forward(Communicator& tp, float* x, size_t count);
  static void backward(Communicator&, float*, size_t) {}
};

// Sequence parallel, entering the TP region: each rank holds `rows_per_rank` rows of C values
// and the column-parallel matmul needs all rows. Forward: all-gather local (rows, C) into full
// (tp * rows, C). Backward: reduce-scatter d(full) into d(local).
struct GatherFromSequenceParallel {
  static void forward(Communicator& tp, const float* local, float* full, size_t rows_per_rank,
                      size_t C);
  static void backward(Communicator& tp, const float* dfull, float* dlocal, size_t rows_per_rank,
                       size_t C);
};

// Sequence parallel, leaving the TP region: each rank holds a partial sum of all rows (after a
// row-parallel matmul) and keeps the sum of its own block. Forward: reduce-scatter full
// (tp * rows, C) into local (rows, C). Backward: all-gather d(local) into d(full).
struct ScatterToSequenceParallel {
  static void forward(Communicator& tp, const float* full, float* local, size_t rows_per_rank,
                      size_t C);
  static void backward(Communicator& tp, const float* dlocal, float* dfull, size_t rows_per_rank,
                       size_t C);
};

}  // namespace loom::parallel
