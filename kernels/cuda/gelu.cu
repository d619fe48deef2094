// Bias + GELU (tanh approximation) forward, GELU backward, and the deterministic column sums of a
// bias gradient, on the GPU.
//
// The elementwise kernels are memory bound: one thread per element pair (bf16x2, 4-byte loads)
// where the row width is even, else one per element; the arithmetic is fp32 with the accurate
// expf (the inputs are bf16, so the result's error is the final rounding). GELU is written as
// x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3), which is 0.5 x (1 + tanh(u)) without the
// 1 + tanh cancellation for negative x; beyond |x| > 10 the exact tail value is selected so that
// exp overflow (inf * 0) cannot produce NaN in the derivative.
//
// bias_backward: grid (column tiles of 32, row chunks); block (32, 8). Each thread sums its
// column over a strided subset of the chunk's rows in a fixed order, the 8 row lanes are added in
// lane order through shared memory, and the chunk's partial row goes to scratch (chunks, C). A
// second kernel adds the chunks in order into dbias. The chunk count depends on N only, so the
// bits never depend on the device or on scheduling.
#include "kernels/cuda/gelu.h"

#include <cuda_bf16.h>

#include "core/base/check.h"
#include "core/base/cuda/check.h"

namespace loom::kernels::cuda {
namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;
constexpr float kTailX = 10.0f;
constexpr int kElementwiseThreads = 256;

// bias_backward tiling: 32 columns (one warp's coalesced 64 bytes) x 8 row lanes per block; at
// least kRowsPerChunk rows per chunk and at most kMaxChunks chunks (enough blocks to fill 132 SMs
// at GPT-2 widths while the partials stay small).
constexpr int kBiasColumns = 32;
constexpr int kBiasRowLanes = 8;
constexpr int kRowsPerChunk = 64;
constexpr int kMaxChunks = 64;

int bias_backward_chunks(int N) {
  const int chunks = ceil_div(N, kRowsPerChunk);
  return chunks < kMaxChunks ? chunks : kMaxChunks;
}

__device__ __forceinline__ float gelu(float x) {
  const float u = kSqrt2OverPi * (x + kCubic * x * x * x);
  const float y = x / (1.0f + expf(-2.0f * u));
  return x > kTailX ? x : (x < -kTailX ? 0.0f : y);
}

__device__ __forceinline__ float gelu_grad(float x) {
  const float u = kSqrt2OverPi * (x + kCubic * x * x * x);
  const float du = kSqrt2OverPi * (1.0f + 3.0f * kCubic * x * x);
  const float e = expf(-2.0f * u);
  const float s = 1.0f / (1.0f + e);
  const float grad = s + 2.0f * x * s * (e * s) * du;
  return x > kTailX ? 1.0f : (x < -kTailX ? 0.0f : grad);
}

// Pairs of elements (kPair) when C is even and the buffers 4-byte aligned; else single elements.
// inp, pre and out may alias one another (each element is read before it is written, by the
// same thread), so no __restrict__.
template <bool kPair>
__global__ void bias_gelu_forward_kernel(__nv_bfloat16* out, __nv_bfloat16* pre,
                                         const __nv_bfloat16* inp, const __nv_bfloat16* bias,
                                         int64_t n, int C) {
  constexpr int kWidth = kPair ? 2 : 1;
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kWidth;
  if (i >= n) return;
  const int c = static_cast<int>(i % C);
  if constexpr (kPair) {
    float2 x = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(inp + i));
    if (bias != nullptr) {
      const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(bias + c));
      x.x += b.x;
      x.y += b.y;
    }
    if (pre != nullptr) *reinterpret_cast<__nv_bfloat162*>(pre + i) = __float22bfloat162_rn(x);
    *reinterpret_cast<__nv_bfloat162*>(out + i) =
        __float22bfloat162_rn(make_float2(gelu(x.x), gelu(x.y)));
  } else {
    float x = __bfloat162float(inp[i]);
    if (bias != nullptr) x += __bfloat162float(bias[c]);
    if (pre != nullptr) pre[i] = __float2bfloat16_rn(x);
    out[i] = __float2bfloat16_rn(gelu(x));
  }
}

// dinp may alias dout: same element, same thread, read before write.
__global__ void gelu_backward_kernel(__nv_bfloat16* dinp, const __nv_bfloat16* pre,
                                     const __nv_bfloat16* dout, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  dinp[i] = __float2bfloat16_rn(gelu_grad(__bfloat162float(pre[i])) * __bfloat162float(dout[i]));
}

// grid (ceil(C / 32), chunks), block (32, 8); partial (chunks, C).
__global__ void bias_backward_partial_kernel(float* __restrict__ partial,
                                             const __nv_bfloat16* __restrict__ dout, int N, int C,
                                             int rows_per_chunk) {
  __shared__ float lane_sums[kBiasRowLanes][kBiasColumns];
  const int c = blockIdx.x * kBiasColumns + threadIdx.x;
  const int row_begin = blockIdx.y * rows_per_chunk;
  const int row_end = min(N, row_begin + rows_per_chunk);
  float sum = 0.0f;
  if (c < C) {
    for (int r = row_begin + threadIdx.y; r < row_end; r += kBiasRowLanes) {
      sum += __bfloat162float(dout[static_cast<int64_t>(r) * C + c]);
    }
  }
  lane_sums[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float total = 0.0f;
    for (int lane = 0; lane < kBiasRowLanes; ++lane) total += lane_sums[lane][threadIdx.x];
    partial[static_cast<int64_t>(blockIdx.y) * C + c] = total;
  }
}

// One thread per column: dbias[c] += sum over chunks, in chunk order.
__global__ void sum_partials_kernel(float* __restrict__ dbias, const float* __restrict__ partial,
                                    int chunks, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float total = 0.0f;
  for (int k = 0; k < chunks; ++k) total += partial[static_cast<int64_t>(k) * C + c];
  dbias[c] += total;
}

bool aligned(const void* p, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

}  // namespace

void bias_gelu_forward(bf16* out, bf16* pre, const bf16* inp, const bf16* bias, int N, int C,
                       cudaStream_t stream) {
  LOOM_CHECK(N > 0 && C > 0, "bias_gelu_forward sizes must be positive: N", N, "C", C);
  LOOM_CHECK(out != nullptr && inp != nullptr, "bias_gelu_forward: out and inp must be non-null");
  const int64_t n = static_cast<int64_t>(N) * C;
  const bool pair = C % 2 == 0 && aligned(out, 4) && aligned(pre, 4) && aligned(inp, 4) &&
                    aligned(bias, 4);
  auto* out_ = reinterpret_cast<__nv_bfloat16*>(out);
  auto* pre_ = reinterpret_cast<__nv_bfloat16*>(pre);
  const auto* inp_ = reinterpret_cast<const __nv_bfloat16*>(inp);
  const auto* bias_ = reinterpret_cast<const __nv_bfloat16*>(bias);
  if (pair) {
    bias_gelu_forward_kernel<true><<<ceil_div(n / 2, kElementwiseThreads), kElementwiseThreads, 0,
                                     stream>>>(out_, pre_, inp_, bias_, n, C);
  } else {
    bias_gelu_forward_kernel<false><<<ceil_div(n, kElementwiseThreads), kElementwiseThreads, 0,
                                      stream>>>(out_, pre_, inp_, bias_, n, C);
  }
  LOOM_CUDA_CHECK_LAUNCH("bias_gelu_forward_kernel");
}

void gelu_backward(bf16* dinp, const bf16* pre, const bf16* dout, int64_t n, cudaStream_t stream) {
  LOOM_CHECK(n > 0, "gelu_backward size must be positive: n", n);
  LOOM_CHECK(dinp != nullptr && pre != nullptr && dout != nullptr,
             "gelu_backward: dinp, pre and dout must be non-null");
  gelu_backward_kernel<<<ceil_div(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
      reinterpret_cast<__nv_bfloat16*>(dinp), reinterpret_cast<const __nv_bfloat16*>(pre),
      reinterpret_cast<const __nv_bfloat16*>(dout), n);
  LOOM_CUDA_CHECK_LAUNCH("gelu_backward_kernel");
}

size_t bias_backward_scratch_floats(int N, int C) {
  LOOM_CHECK(N > 0 && C > 0, "bias_backward sizes must be positive: N", N, "C", C);
  return static_cast<size_t>(bias_backward_chunks(N)) * static_cast<size_t>(C);
}

void bias_backward(float* dbias, const bf16* dout, int N, int C, float* scratch,
                   cudaStream_t stream) {
  LOOM_CHECK(N > 0 && C > 0, "bias_backward sizes must be positive: N", N, "C", C);
  LOOM_CHECK(dbias != nullptr && dout != nullptr && scratch != nullptr,
             "bias_backward: dbias, dout and scratch must be non-null");
  const int chunks = bias_backward_chunks(N);
  const int rows_per_chunk = ceil_div(N, chunks);
  const dim3 grid(static_cast<unsigned>(ceil_div(C, kBiasColumns)), static_cast<unsigned>(chunks));
  const dim3 block(kBiasColumns, kBiasRowLanes);
  bias_backward_partial_kernel<<<grid, block, 0, stream>>>(
      scratch, reinterpret_cast<const __nv_bfloat16*>(dout), N, C, rows_per_chunk);
  LOOM_CUDA_CHECK_LAUNCH("bias_backward_partial_kernel");
  sum_partials_kernel<<<ceil_div(C, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
      dbias, scratch, chunks, C);
  LOOM_CUDA_CHECK_LAUNCH("sum_partials_kernel");
}

}  // namespace loom::kernels::cuda
