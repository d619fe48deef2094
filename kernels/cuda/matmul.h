// Matmuls through cuBLASLt: bf16 inputs, fp32 accumulation, bias and GELU applied in the epilogue
// (CPU twin: kernels/cpu/matmul.h, the layout of torch.nn.Linear).
//
// A Matmul owns the cuBLASLt handle, a workspace and a cache of the algorithm chosen for each
// shape (cublasLtMatmulAlgoGetHeuristic's first answer), so that a training step does no
// allocation and no heuristic query after its first call.
//
// Backward convention (llm.c's): dinp is an activation gradient and is OVERWRITTEN (beta = 0);
// dweight is a parameter gradient and ACCUMULATES (beta = 1), so that micro-batches sum into one
// fp32 gradient. The Backend's convention as it stands; the bias gradient is gelu.h's.
#pragma once

#include <cublasLt.h>

#include <cstdint>
#include <map>
#include <tuple>

#include "core/base/caching_allocator.h"
#include "kernels/cuda/common.h"

namespace loom::kernels::cuda {

enum class Epilogue : uint8_t {
  kNone = 0,
  kBias = 1,      // out = inp @ weight^T + bias
  kBiasGelu = 2,  // pre = inp @ weight^T + bias (saved for backward); out = gelu(pre)
};

class Matmul {
 public:
  // The workspace comes from `allocator` (a CUDA context's) and is kept for the object's life.
  explicit Matmul(CachingAllocator& allocator);
  ~Matmul();
  Matmul(const Matmul&) = delete;
  Matmul& operator=(const Matmul&) = delete;

  // out (N, OC) bf16 = inp (N, C) bf16 @ weight (OC, C)^T bf16, with the epilogue: bias (OC) bf16
  // for kBias and kBiasGelu; pre (N, OC) bf16 receives inp @ weight^T + bias for kBiasGelu.
  // Rows of out have stride OC. kBiasGelu with pre null: out alone. All pointers must be 16-byte
  // aligned (cuBLASLt's requirement). cuBLASLt's GELU epilogue needs OC a multiple of 8 (the
  // leading dimension of pre); for other OC the bias epilogue writes pre (or out, when pre is null)
  // and bias_gelu_forward (kernels/cuda/gelu.h) applies GELU to it, so out is then gelu of the
  // bf16-rounded pre.
  void forward(bf16* out, bf16* pre, const bf16* inp, const bf16* weight, const bf16* bias, int N,
               int C, int OC, Epilogue epilogue, cudaStream_t stream);

  // Backward of forward() without its epilogue (the caller differentiates GELU and the bias):
  // dinp (N, C) bf16 = dout @ weight, overwritten (null: not wanted);
  // dweight (OC, C) fp32 += dout^T @ inp (accumulated; null: not wanted).
  void backward(bf16* dinp, float* dweight, const bf16* dout, const bf16* inp, const bf16* weight,
                int N, int C, int OC, cudaStream_t stream);

  // d = alpha * op(a) @ op(b) + beta * d, column-major as cuBLAS sees it; for the benchmark of the
  // device's matmul ceiling and for shapes the two calls above do not cover. a, b bf16; d bf16 or
  // fp32 (d_dtype).
  void gemm(void* d, DType d_dtype, const bf16* a, const bf16* b, int m, int n, int k,
            bool transpose_a, bool transpose_b, float alpha, float beta, cudaStream_t stream);

 private:
  struct Plan;
  // m, n, k, transpose a, transpose b, cublasLtEpilogue_t, d dtype, and the pointers' common
  // alignment in bytes (16..256): cuBLASLt picks algorithms for the alignment it is shown, so a
  // plan is only reused for pointers at least as aligned.
  using Key = std::tuple<int, int, int, int, int, int, int, int>;
  Plan& plan_for(const Key& key);
  void run(int m, int n, int k, bool transpose_a, bool transpose_b, int epilogue, DType d_dtype,
           void* d, const void* a, const void* b, const void* bias, void* aux, float alpha,
           float beta, cudaStream_t stream);

  CachingAllocator& allocator_;
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<Key, Plan*> plans_;  // owned; deleted (with their descriptors) by the destructor
};

}  // namespace loom::kernels::cuda
