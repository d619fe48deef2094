#include "parallel/regions.h"

namespace loom::parallel {

void CopyToTensorParallel::backward(Communicator& tp, float* grad, size_t count) {
  if (tp.size() > 1) tp.all_reduce(grad, grad, count, DType::kF32, ReduceOp::kSum);
}

void ReduceFromTensorParallel::forward(Communicator& tp, float* x, size_t count) {
  if (tp.size() > 1) tp.all_reduce(x, x, count, DType::kF32, ReduceOp::kSum);
}

void GatherFromSequenceParallel::forward(Communicator& tp, const float* local, float* full,
                                         size_t rows_per_rank, size_t C) {
  tp.all_gather(local, full, rows_per_rank * C, DType::kF32);
}

void GatherFromSequenceParallel::backward(Communicator& tp, const float* dfull, float* dlocal,
                                          size_t rows_per_rank, size_t C) {
  tp.reduce_scatter(dfull, dlocal, rows_per_rank * C, DType::kF32, ReduceOp::kSum);
}

void ScatterToSequenceParallel::forward(Communicator& tp, const float* full, float* local,
                                        size_t rows_per_rank, size_t C) {
  tp.reduce_scatter(full, local, rows_per_rank * C, DType::kF32, ReduceOp::kSum);
}

void ScatterToSequenceParallel::backward(Communicator& tp, const float* dlocal, float* dfull,
                                         size_t rows_per_rank, size_t C) {
  tp.all_gather(dlocal, dfull, rows_per_rank * C, DType::kF32);
}

}  // namespace loom::parallel
