// Residual add + RMSNorm forward and RMSNorm backward on the GPU.
//
// Forward: one warp per row, 8 rows per 256-thread block, as layernorm.cu. Each lane walks its
// share of the row in 16-byte vectors (8 bf16) when C is a multiple of 8 and every pointer is
// 16-byte aligned, else element by element. Pass 1 writes residual_out (rounded to bf16) and sums
// the squares of the rounded values; pass 2 re-reads residual_out (the lane's own writes, now in
// L1/L2) and writes out. The statistic is that of the bf16 residual_out, which is exactly what the
// backward sees as the RMSNorm's input. Rows are never held in registers or shared memory, so any
// C works. The plain RMSNorm is the same kernel with no residual to write.
//
// Backward, three kernels (as layernorm.cu):
//  1. one warp per row computes mean(g * norm), g = weight * dout, and adds d RMSNorm / d input
//     to dresidual;
//  2. column partials: grid (column tiles of 32, row chunks), block (32, 8); each thread sums
//     dout * norm of its column over a strided subset of its chunk's rows, in order, and the 8
//     lanes are added in lane order through shared memory into scratch (chunks, C);
//  3. one thread per column adds the chunks in order into dweight.
#include "kernels/cuda/rmsnorm.h"

#include <cuda_bf16.h>

#include "core/base/check.h"
#include "core/base/cuda/check.h"
#include "kernels/cuda/vector_io.cuh"

namespace loom::kernels::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 8;  // warps per block in the row kernels

// Column-partial tiling, as layernorm.cu.
constexpr int kColumns = 32;
constexpr int kRowLanes = 8;
constexpr int kRowsPerChunk = 64;
constexpr int kMaxChunks = 64;

int backward_chunks(int N) {
  const int chunks = ceil_div(N, kRowsPerChunk);
  return chunks < kMaxChunks ? chunks : kMaxChunks;
}

// One warp per row. residual_out may alias residual_in (same element, same lane, read before
// written), hence no __restrict__ on either, and residual_out is re-read with plain loads.
// residual_out null (the plain RMSNorm): delta and delta_bias are null too, so residual_in
// already holds the bf16 values to normalise; nothing is stored and pass 2 re-reads it.
template <int kWidth>
__global__ void residual_rmsnorm_forward_kernel(
    __nv_bfloat16* residual_out, __nv_bfloat16* __restrict__ out, float* __restrict__ rstd,
    const __nv_bfloat16* residual_in, const __nv_bfloat16* delta,
    const __nv_bfloat16* __restrict__ delta_bias, const __nv_bfloat16* __restrict__ weight,
    float eps, int N, int C) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= N) return;  // whole warps leave; no block-wide synchronisation follows
  const int64_t offset = static_cast<int64_t>(row) * C;
  constexpr int kStride = kWarp * kWidth;
  const __nv_bfloat16* normed = residual_out != nullptr ? residual_out : residual_in;

  float sumsq = 0.0f;
  for (int c = lane * kWidth; c < C; c += kStride) {
    float r[kWidth];
    residual_sum<kWidth>(r, residual_in, delta, delta_bias, offset, c);
    if (residual_out != nullptr) store<kWidth>(residual_out + offset + c, r);
#pragma unroll
    for (int k = 0; k < kWidth; ++k) sumsq += r[k] * r[k];
  }
  const float s = rsqrtf(warp_sum(sumsq) / static_cast<float>(C) + eps);

  for (int c = lane * kWidth; c < C; c += kStride) {
    float r[kWidth], w[kWidth], y[kWidth];
    load<kWidth>(r, normed + offset + c);
    load<kWidth>(w, weight + c);
#pragma unroll
    for (int k = 0; k < kWidth; ++k) y[k] = r[k] * s * w[k];
    store<kWidth>(out + offset + c, y);
  }
  if (lane == 0 && rstd != nullptr) rstd[row] = s;
}

// One warp per row: dresidual += rstd * (g - norm * mean(g * norm)), g = weight * dout.
template <int kWidth>
__global__ void rmsnorm_backward_input_kernel(__nv_bfloat16* __restrict__ dresidual,
                                              const __nv_bfloat16* __restrict__ dout,
                                              const __nv_bfloat16* __restrict__ inp,
                                              const __nv_bfloat16* __restrict__ weight,
                                              const float* __restrict__ rstd, int N, int C) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= N) return;
  const int64_t offset = static_cast<int64_t>(row) * C;
  constexpr int kStride = kWarp * kWidth;
  const float s = rstd[row];

  float g_norm_sum = 0.0f;
  for (int c = lane * kWidth; c < C; c += kStride) {
    float x[kWidth], dy[kWidth], w[kWidth];
    load<kWidth>(x, inp + offset + c);
    load<kWidth>(dy, dout + offset + c);
    load<kWidth>(w, weight + c);
#pragma unroll
    for (int k = 0; k < kWidth; ++k) g_norm_sum += w[k] * dy[k] * x[k] * s;
  }
  const float g_norm_mean = warp_sum(g_norm_sum) / static_cast<float>(C);

  for (int c = lane * kWidth; c < C; c += kStride) {
    float x[kWidth], dy[kWidth], w[kWidth], dx[kWidth];
    load<kWidth>(x, inp + offset + c);
    load<kWidth>(dy, dout + offset + c);
    load<kWidth>(w, weight + c);
    load<kWidth>(dx, dresidual + offset + c);
#pragma unroll
    for (int k = 0; k < kWidth; ++k) dx[k] += (w[k] * dy[k] - x[k] * s * g_norm_mean) * s;
    store<kWidth>(dresidual + offset + c, dx);
  }
}

// grid (ceil(C / 32), chunks), block (32, 8); partial (chunks, C).
__global__ void rmsnorm_backward_partial_kernel(float* __restrict__ partial,
                                                const __nv_bfloat16* __restrict__ dout,
                                                const __nv_bfloat16* __restrict__ inp,
                                                const float* __restrict__ rstd, int N, int C,
                                                int rows_per_chunk) {
  __shared__ float lane_dweight[kRowLanes][kColumns];
  const int c = blockIdx.x * kColumns + threadIdx.x;
  const int row_begin = blockIdx.y * rows_per_chunk;
  const int row_end = min(N, row_begin + rows_per_chunk);
  float dw = 0.0f;
  if (c < C) {
    for (int r = row_begin + threadIdx.y; r < row_end; r += kRowLanes) {
      const int64_t i = static_cast<int64_t>(r) * C + c;
      dw += __bfloat162float(dout[i]) * (__bfloat162float(inp[i]) * rstd[r]);
    }
  }
  lane_dweight[threadIdx.y][threadIdx.x] = dw;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float dw_total = 0.0f;
    for (int lane = 0; lane < kRowLanes; ++lane) dw_total += lane_dweight[lane][threadIdx.x];
    partial[static_cast<int64_t>(blockIdx.y) * C + c] = dw_total;
  }
}

__global__ void rmsnorm_backward_sum_kernel(float* __restrict__ dweight,
                                            const float* __restrict__ partial, int chunks, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float dw = 0.0f;
  for (int k = 0; k < chunks; ++k) dw += partial[static_cast<int64_t>(k) * C + c];
  dweight[c] += dw;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

void residual_rmsnorm_forward(bf16* residual_out, bf16* out, float* rstd, const bf16* residual_in,
                              const bf16* delta, const bf16* delta_bias, const bf16* weight,
                              float eps, int N, int C, cudaStream_t stream) {
  LOOM_CHECK(N > 0 && C > 0, "residual_rmsnorm_forward sizes must be positive: N", N, "C", C);
  LOOM_CHECK(residual_out != nullptr && out != nullptr && weight != nullptr,
             "residual_rmsnorm_forward: residual_out, out and weight must be non-null");
  LOOM_CHECK(residual_in != nullptr || delta != nullptr,
             "residual_rmsnorm_forward: residual_in and delta cannot both be null");
  LOOM_CHECK(static_cast<const void*>(out) != static_cast<const void*>(residual_out),
             "residual_rmsnorm_forward: out must not alias residual_out");
  LOOM_CHECK(eps > 0.0f, "residual_rmsnorm_forward: eps must be positive:", eps);
  const bool vectorised = C % 8 == 0 && aligned16(residual_out) && aligned16(out) &&
                          aligned16(residual_in) && aligned16(delta) && aligned16(delta_bias) &&
                          aligned16(weight);
  const int grid = ceil_div(N, kRowsPerBlock);
  const int block = kRowsPerBlock * kWarp;
  auto* residual_out_ = reinterpret_cast<__nv_bfloat16*>(residual_out);
  auto* out_ = reinterpret_cast<__nv_bfloat16*>(out);
  const auto* residual_in_ = reinterpret_cast<const __nv_bfloat16*>(residual_in);
  const auto* delta_ = reinterpret_cast<const __nv_bfloat16*>(delta);
  const auto* delta_bias_ = reinterpret_cast<const __nv_bfloat16*>(delta_bias);
  const auto* weight_ = reinterpret_cast<const __nv_bfloat16*>(weight);
  if (vectorised) {
    residual_rmsnorm_forward_kernel<8><<<grid, block, 0, stream>>>(
        residual_out_, out_, rstd, residual_in_, delta_, delta_bias_, weight_, eps, N, C);
  } else {
    residual_rmsnorm_forward_kernel<1><<<grid, block, 0, stream>>>(
        residual_out_, out_, rstd, residual_in_, delta_, delta_bias_, weight_, eps, N, C);
  }
  LOOM_CUDA_CHECK_LAUNCH("residual_rmsnorm_forward_kernel");
}

void rmsnorm_forward(bf16* out, float* rstd, const bf16* inp, const bf16* weight, float eps, int N,
                     int C, cudaStream_t stream) {
  LOOM_CHECK(N > 0 && C > 0, "rmsnorm_forward sizes must be positive: N", N, "C", C);
  LOOM_CHECK(out != nullptr && inp != nullptr && weight != nullptr,
             "rmsnorm_forward: out, inp and weight must be non-null");
  LOOM_CHECK(static_cast<const void*>(out) != static_cast<const void*>(inp),
             "rmsnorm_forward: out must not alias inp (a row is read twice)");
  LOOM_CHECK(eps > 0.0f, "rmsnorm_forward: eps must be positive:", eps);
  const bool vectorised = C % 8 == 0 && aligned16(out) && aligned16(inp) && aligned16(weight);
  const int grid = ceil_div(N, kRowsPerBlock);
  const int block = kRowsPerBlock * kWarp;
  auto* out_ = reinterpret_cast<__nv_bfloat16*>(out);
  const auto* inp_ = reinterpret_cast<const __nv_bfloat16*>(inp);
  const auto* weight_ = reinterpret_cast<const __nv_bfloat16*>(weight);
  // The fused kernel without a residual to write: see residual_rmsnorm_forward_kernel.
  if (vectorised) {
    residual_rmsnorm_forward_kernel<8><<<grid, block, 0, stream>>>(
        nullptr, out_, rstd, inp_, nullptr, nullptr, weight_, eps, N, C);
  } else {
    residual_rmsnorm_forward_kernel<1><<<grid, block, 0, stream>>>(
        nullptr, out_, rstd, inp_, nullptr, nullptr, weight_, eps, N, C);
  }
  LOOM_CUDA_CHECK_LAUNCH("residual_rmsnorm_forward_kernel");
}

size_t rmsnorm_backward_scratch_floats(int N, int C) {
  LOOM_CHECK(N > 0 && C > 0, "rmsnorm_backward sizes must be positive: N", N, "C", C);
  return static_cast<size_t>(backward_chunks(N)) * static_cast<size_t>(C);
}

void rmsnorm_backward(bf16* dresidual, float* dweight, const bf16* dout, const bf16* inp,
                      const bf16* weight, const float* rstd, int N, int C, float* scratch,
                      cudaStream_t stream) {
  LOOM_CHECK(N > 0 && C > 0, "rmsnorm_backward sizes must be positive: N", N, "C", C);
  LOOM_CHECK(dresidual != nullptr && dweight != nullptr && dout != nullptr && inp != nullptr &&
                 weight != nullptr && rstd != nullptr && scratch != nullptr,
             "rmsnorm_backward: all pointers must be non-null");
  // The column partials read dout after dresidual was updated.
  LOOM_CHECK(static_cast<const void*>(dresidual) != static_cast<const void*>(dout),
             "rmsnorm_backward: dresidual must not alias dout");
  auto* dresidual_ = reinterpret_cast<__nv_bfloat16*>(dresidual);
  const auto* dout_ = reinterpret_cast<const __nv_bfloat16*>(dout);
  const auto* inp_ = reinterpret_cast<const __nv_bfloat16*>(inp);
  const auto* weight_ = reinterpret_cast<const __nv_bfloat16*>(weight);

  const bool vectorised = C % 8 == 0 && aligned16(dresidual) && aligned16(dout) &&
                          aligned16(inp) && aligned16(weight);
  const int grid = ceil_div(N, kRowsPerBlock);
  const int block = kRowsPerBlock * kWarp;
  if (vectorised) {
    rmsnorm_backward_input_kernel<8><<<grid, block, 0, stream>>>(dresidual_, dout_, inp_, weight_,
                                                                 rstd, N, C);
  } else {
    rmsnorm_backward_input_kernel<1><<<grid, block, 0, stream>>>(dresidual_, dout_, inp_, weight_,
                                                                 rstd, N, C);
  }
  LOOM_CUDA_CHECK_LAUNCH("rmsnorm_backward_input_kernel");

  const int chunks = backward_chunks(N);
  const int rows_per_chunk = ceil_div(N, chunks);
  const dim3 partial_grid(static_cast<unsigned>(ceil_div(C, kColumns)), static_cast<unsigned>(chunks));
  const dim3 partial_block(kColumns, kRowLanes);
  rmsnorm_backward_partial_kernel<<<partial_grid, partial_block, 0, stream>>>(
      scratch, dout_, inp_, rstd, N, C, rows_per_chunk);
  LOOM_CUDA_CHECK_LAUNCH("rmsnorm_backward_partial_kernel");
  constexpr int kSumThreads = 256;
  rmsnorm_backward_sum_kernel<<<ceil_div(C, kSumThreads), kSumThreads, 0, stream>>>(
      dweight, scratch, chunks, C);
  LOOM_CUDA_CHECK_LAUNCH("rmsnorm_backward_sum_kernel");
}

}  // namespace loom::kernels::cuda
