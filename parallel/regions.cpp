#include "parallel/regions.h"

namespace loom::parallel {

void CopyToTensorParallel::backward(Communicator& tp, void* grad, size_t count, DType dtype) {
  if (tp.size() > 1) tp.all_reduce(grad, grad, count, dtype, ReduceOp::kSum);
}

void ReduceFromTensorParallel::forward(Communicator& tp, void* x, size_t count, DType dtype) {
  if (tp.size() > 1) tp.all_reduce(x, x, count, dtype, ReduceOp::kSum);
}

void GatherFromSequenceParallel::forward(Communicator& tp, const void* local, void* full, size_t rows_per_rank,
                                         size_t C, DType dtype) {
  tp.all_gather(local, full, rows_per_rank * C, dtype);
}

void GatherFromSequenceParallel::backward(Communicator& tp, const void* dfull, void* dlocal, size_t rows_per_rank,
                                          size_t C, DType dtype) {
  tp.reduce_scatter(dfull, dlocal, rows_per_rank * C, dtype, ReduceOp::kSum);
}

void ScatterToSequenceParallel::forward(Communicator& tp, const void* full, void* local, size_t rows_per_rank,
                                        size_t C, DType dtype) {
  tp.reduce_scatter(full, local, rows_per_rank * C, dtype, ReduceOp::kSum);
}

void ScatterToSequenceParallel::backward(Communicator& tp, const void* dlocal, void* dfull, size_t rows_per_rank,
                                         size_t C, DType dtype) {
  tp.all_gather(dlocal, dfull, rows_per_rank * C, dtype);
}

void VocabParallelStatistics::max(Communicator& tp, float* row_max, size_t N) {
  if (tp.size() > 1) tp.all_reduce(row_max, row_max, N, DType::kF32, ReduceOp::kMax);
}

void VocabParallelStatistics::sum(Communicator& tp, float* sums, size_t count) {
  if (tp.size() > 1) tp.all_reduce(sums, sums, count, DType::kF32, ReduceOp::kSum);
}

void SequenceParallelGradients::sum(Communicator& tp, float* grad, size_t count) {
  if (tp.size() > 1) tp.all_reduce(grad, grad, count, DType::kF32, ReduceOp::kSum);
}

void TiedEmbeddingGradients::sum(Communicator& embedding, float* grad, size_t count) {
  if (embedding.size() > 1) embedding.all_reduce(grad, grad, count, DType::kF32, ReduceOp::kSum);
}

}  // namespace loom::parallel
