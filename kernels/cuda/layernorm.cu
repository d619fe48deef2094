// Residual add + LayerNorm forward and LayerNorm backward on the GPU.
//
// Forward: one warp per row, 8 rows per 256-thread block. Each lane walks its share of the row in
// 16-byte vectors (8 bf16) when C is a multiple of 8 and every pointer is 16-byte aligned, else
// element by element. Pass 1 writes residual_out (rounded to bf16) and sums the rounded values;
// pass 2 re-reads residual_out (the lane's own writes, now in L1/L2) for the centred variance
// (two-pass: no E[x^2] - E[x]^2 cancellation); pass 3 writes out. The statistics are those of
// the bf16 residual_out, which is exactly what the backward sees as the LayerNorm's input.
// Rows are never held in registers or shared memory, so any C works. The plain LayerNorm is the
// same kernel with no residual to write (it normalises its input as read); the residual add alone
// is an elementwise kernel with the same vector path.
//
// Backward, three kernels:
//  1. one warp per row (as the forward) computes the two row means of the input gradient and adds
//     d LN / d input to dresidual;
//  2. column partials: grid (column tiles of 32, row chunks), block (32, 8); each thread sums
//     dout * norm and dout of its column over a strided subset of its chunk's rows, in order, and
//     the 8 lanes are added in lane order through shared memory into scratch (chunks, 2, C);
//  3. one thread per column adds the chunks in order into dweight and dbias.
// Kernel 2 reads dout and inp a second time (the backward moves ~6 instead of 5 row-sized arrays)
// in exchange for an obviously deterministic reduction for any C.
#include "kernels/cuda/layernorm.h"

#include <cuda_bf16.h>

#include "core/base/check.h"
#include "core/base/cuda/check.h"
#include "kernels/cuda/vector_io.cuh"

namespace loom::kernels::cuda {
namespace {

constexpr float kEps = 1e-5f;  // torch.nn.LayerNorm's, as kernels/cpu/layernorm.h
constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 8;  // warps per block in the row kernels

// Column-partial tiling, as bias_backward in gelu.cu.
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
// residual_out null (the plain LayerNorm): delta and delta_bias are null too, so residual_in
// already holds the bf16 values to normalise; nothing is stored and passes 2 and 3 re-read it.
template <int kWidth>
__global__ void residual_layernorm_forward_kernel(
    __nv_bfloat16* residual_out, __nv_bfloat16* __restrict__ out, float* __restrict__ mean,
    float* __restrict__ rstd, const __nv_bfloat16* residual_in, const __nv_bfloat16* delta,
    const __nv_bfloat16* __restrict__ delta_bias, const __nv_bfloat16* __restrict__ weight,
    const __nv_bfloat16* __restrict__ bias, int N, int C) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= N) return;  // whole warps leave; no block-wide synchronisation follows
  const int64_t offset = static_cast<int64_t>(row) * C;
  constexpr int kStride = kWarp * kWidth;
  const __nv_bfloat16* normed = residual_out != nullptr ? residual_out : residual_in;

  float sum = 0.0f;
  for (int c = lane * kWidth; c < C; c += kStride) {
    float r[kWidth];
    residual_sum<kWidth>(r, residual_in, delta, delta_bias, offset, c);
    if (residual_out != nullptr) store<kWidth>(residual_out + offset + c, r);
#pragma unroll
    for (int k = 0; k < kWidth; ++k) sum += r[k];
  }
  const float m = warp_sum(sum) / static_cast<float>(C);

  float var = 0.0f;
  for (int c = lane * kWidth; c < C; c += kStride) {
    float r[kWidth];
    load<kWidth>(r, normed + offset + c);
#pragma unroll
    for (int k = 0; k < kWidth; ++k) var += (r[k] - m) * (r[k] - m);
  }
  const float s = rsqrtf(warp_sum(var) / static_cast<float>(C) + kEps);

  for (int c = lane * kWidth; c < C; c += kStride) {
    float r[kWidth], w[kWidth], b[kWidth], y[kWidth];
    load<kWidth>(r, normed + offset + c);
    load<kWidth>(w, weight + c);
    load<kWidth>(b, bias + c);
#pragma unroll
    for (int k = 0; k < kWidth; ++k) y[k] = (r[k] - m) * s * w[k] + b[k];
    store<kWidth>(out + offset + c, y);
  }
  if (lane == 0) {
    if (mean != nullptr) mean[row] = m;
    if (rstd != nullptr) rstd[row] = s;
  }
}

// out = a + b + bias, summed in fp32 in that order and rounded once; one thread per kWidth
// elements. out may alias a or b (each element is read before it is written, by one thread).
template <int kWidth>
__global__ void residual_add_kernel(__nv_bfloat16* out, const __nv_bfloat16* a,
                                    const __nv_bfloat16* b,
                                    const __nv_bfloat16* __restrict__ bias, int64_t n, int C) {
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kWidth;
  if (i >= n) return;
  float sum[kWidth], t[kWidth];
#pragma unroll
  for (int k = 0; k < kWidth; ++k) sum[k] = 0.0f;
  if (a != nullptr) load<kWidth>(sum, a + i);
  if (b != nullptr) {
    load<kWidth>(t, b + i);
#pragma unroll
    for (int k = 0; k < kWidth; ++k) sum[k] += t[k];
  }
  if (bias != nullptr) {
    load<kWidth>(t, bias + i % C);  // kWidth divides C: a vector never wraps a row
#pragma unroll
    for (int k = 0; k < kWidth; ++k) sum[k] += t[k];
  }
  store<kWidth>(out + i, sum);
}

// One warp per row: dresidual += rstd * (g - mean(g) - norm * mean(g * norm)), g = weight * dout.
template <int kWidth>
__global__ void layernorm_backward_input_kernel(
    __nv_bfloat16* __restrict__ dresidual, const __nv_bfloat16* __restrict__ dout,
    const __nv_bfloat16* __restrict__ inp, const __nv_bfloat16* __restrict__ weight,
    const float* __restrict__ mean, const float* __restrict__ rstd, int N, int C) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= N) return;
  const int64_t offset = static_cast<int64_t>(row) * C;
  constexpr int kStride = kWarp * kWidth;
  const float m = mean[row];
  const float s = rstd[row];

  float g_sum = 0.0f;
  float g_norm_sum = 0.0f;
  for (int c = lane * kWidth; c < C; c += kStride) {
    float x[kWidth], dy[kWidth], w[kWidth];
    load<kWidth>(x, inp + offset + c);
    load<kWidth>(dy, dout + offset + c);
    load<kWidth>(w, weight + c);
#pragma unroll
    for (int k = 0; k < kWidth; ++k) {
      const float g = w[k] * dy[k];
      g_sum += g;
      g_norm_sum += g * (x[k] - m) * s;
    }
  }
  const float g_mean = warp_sum(g_sum) / static_cast<float>(C);
  const float g_norm_mean = warp_sum(g_norm_sum) / static_cast<float>(C);

  for (int c = lane * kWidth; c < C; c += kStride) {
    float x[kWidth], dy[kWidth], w[kWidth], dx[kWidth];
    load<kWidth>(x, inp + offset + c);
    load<kWidth>(dy, dout + offset + c);
    load<kWidth>(w, weight + c);
    load<kWidth>(dx, dresidual + offset + c);
#pragma unroll
    for (int k = 0; k < kWidth; ++k) {
      const float norm = (x[k] - m) * s;
      dx[k] += (w[k] * dy[k] - g_mean - norm * g_norm_mean) * s;
    }
    store<kWidth>(dresidual + offset + c, dx);
  }
}

// grid (ceil(C / 32), chunks), block (32, 8); partial (chunks, 2, C): dweight then dbias.
__global__ void layernorm_backward_partial_kernel(float* __restrict__ partial,
                                                  const __nv_bfloat16* __restrict__ dout,
                                                  const __nv_bfloat16* __restrict__ inp,
                                                  const float* __restrict__ mean,
                                                  const float* __restrict__ rstd, int N, int C,
                                                  int rows_per_chunk) {
  __shared__ float lane_dweight[kRowLanes][kColumns];
  __shared__ float lane_dbias[kRowLanes][kColumns];
  const int c = blockIdx.x * kColumns + threadIdx.x;
  const int row_begin = blockIdx.y * rows_per_chunk;
  const int row_end = min(N, row_begin + rows_per_chunk);
  float dw = 0.0f;
  float db = 0.0f;
  if (c < C) {
    for (int r = row_begin + threadIdx.y; r < row_end; r += kRowLanes) {
      const int64_t i = static_cast<int64_t>(r) * C + c;
      const float dy = __bfloat162float(dout[i]);
      const float norm = (__bfloat162float(inp[i]) - mean[r]) * rstd[r];
      dw += dy * norm;
      db += dy;
    }
  }
  lane_dweight[threadIdx.y][threadIdx.x] = dw;
  lane_dbias[threadIdx.y][threadIdx.x] = db;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float dw_total = 0.0f;
    float db_total = 0.0f;
    for (int lane = 0; lane < kRowLanes; ++lane) {
      dw_total += lane_dweight[lane][threadIdx.x];
      db_total += lane_dbias[lane][threadIdx.x];
    }
    float* chunk = partial + static_cast<int64_t>(blockIdx.y) * 2 * C;  // (2, C)
    chunk[c] = dw_total;
    chunk[C + c] = db_total;
  }
}

__global__ void layernorm_backward_sum_kernel(float* __restrict__ dweight,
                                              float* __restrict__ dbias,
                                              const float* __restrict__ partial, int chunks,
                                              int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float dw = 0.0f;
  float db = 0.0f;
  for (int k = 0; k < chunks; ++k) {
    dw += partial[static_cast<int64_t>(k) * 2 * C + c];
    db += partial[static_cast<int64_t>(k) * 2 * C + C + c];
  }
  dweight[c] += dw;
  dbias[c] += db;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

void residual_layernorm_forward(bf16* residual_out, bf16* out, float* mean, float* rstd,
                                const bf16* residual_in, const bf16* delta, const bf16* delta_bias,
                                const bf16* weight, const bf16* bias, int N, int C,
                                cudaStream_t stream) {
  LOOM_CHECK(N > 0 && C > 0, "residual_layernorm_forward sizes must be positive: N", N, "C", C);
  LOOM_CHECK(residual_out != nullptr && out != nullptr && weight != nullptr && bias != nullptr,
             "residual_layernorm_forward: residual_out, out, weight and bias must be non-null");
  LOOM_CHECK(residual_in != nullptr || delta != nullptr,
             "residual_layernorm_forward: residual_in and delta cannot both be null");
  LOOM_CHECK(static_cast<const void*>(out) != static_cast<const void*>(residual_out),
             "residual_layernorm_forward: out must not alias residual_out");
  const bool vectorised = C % 8 == 0 && aligned16(residual_out) && aligned16(out) &&
                          aligned16(residual_in) && aligned16(delta) && aligned16(delta_bias) &&
                          aligned16(weight) && aligned16(bias);
  const int grid = ceil_div(N, kRowsPerBlock);
  const int block = kRowsPerBlock * kWarp;
  auto* residual_out_ = reinterpret_cast<__nv_bfloat16*>(residual_out);
  auto* out_ = reinterpret_cast<__nv_bfloat16*>(out);
  const auto* residual_in_ = reinterpret_cast<const __nv_bfloat16*>(residual_in);
  const auto* delta_ = reinterpret_cast<const __nv_bfloat16*>(delta);
  const auto* delta_bias_ = reinterpret_cast<const __nv_bfloat16*>(delta_bias);
  const auto* weight_ = reinterpret_cast<const __nv_bfloat16*>(weight);
  const auto* bias_ = reinterpret_cast<const __nv_bfloat16*>(bias);
  if (vectorised) {
    residual_layernorm_forward_kernel<8><<<grid, block, 0, stream>>>(
        residual_out_, out_, mean, rstd, residual_in_, delta_, delta_bias_, weight_, bias_, N, C);
  } else {
    residual_layernorm_forward_kernel<1><<<grid, block, 0, stream>>>(
        residual_out_, out_, mean, rstd, residual_in_, delta_, delta_bias_, weight_, bias_, N, C);
  }
  LOOM_CUDA_CHECK_LAUNCH("residual_layernorm_forward_kernel");
}

void layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* inp, const bf16* weight,
                       const bf16* bias, int N, int C, cudaStream_t stream) {
  LOOM_CHECK(N > 0 && C > 0, "layernorm_forward sizes must be positive: N", N, "C", C);
  LOOM_CHECK(out != nullptr && inp != nullptr && weight != nullptr && bias != nullptr,
             "layernorm_forward: out, inp, weight and bias must be non-null");
  LOOM_CHECK(static_cast<const void*>(out) != static_cast<const void*>(inp),
             "layernorm_forward: out must not alias inp (a row is read three times)");
  const bool vectorised = C % 8 == 0 && aligned16(out) && aligned16(inp) && aligned16(weight) &&
                          aligned16(bias);
  const int grid = ceil_div(N, kRowsPerBlock);
  const int block = kRowsPerBlock * kWarp;
  auto* out_ = reinterpret_cast<__nv_bfloat16*>(out);
  const auto* inp_ = reinterpret_cast<const __nv_bfloat16*>(inp);
  const auto* weight_ = reinterpret_cast<const __nv_bfloat16*>(weight);
  const auto* bias_ = reinterpret_cast<const __nv_bfloat16*>(bias);
  // The fused kernel without a residual to write: see residual_layernorm_forward_kernel.
  if (vectorised) {
    residual_layernorm_forward_kernel<8><<<grid, block, 0, stream>>>(
        nullptr, out_, mean, rstd, inp_, nullptr, nullptr, weight_, bias_, N, C);
  } else {
    residual_layernorm_forward_kernel<1><<<grid, block, 0, stream>>>(
        nullptr, out_, mean, rstd, inp_, nullptr, nullptr, weight_, bias_, N, C);
  }
  LOOM_CUDA_CHECK_LAUNCH("residual_layernorm_forward_kernel");
}

void residual_add(bf16* out, const bf16* a, const bf16* b, const bf16* bias, int N, int C,
                  cudaStream_t stream) {
  LOOM_CHECK(N > 0 && C > 0, "residual_add sizes must be positive: N", N, "C", C);
  LOOM_CHECK(out != nullptr, "residual_add: out must be non-null");
  const int64_t n = static_cast<int64_t>(N) * C;
  constexpr int kThreads = 256;
  const bool vectorised = C % 8 == 0 && aligned16(out) && aligned16(a) && aligned16(b) &&
                          aligned16(bias);
  auto* out_ = reinterpret_cast<__nv_bfloat16*>(out);
  const auto* a_ = reinterpret_cast<const __nv_bfloat16*>(a);
  const auto* b_ = reinterpret_cast<const __nv_bfloat16*>(b);
  const auto* bias_ = reinterpret_cast<const __nv_bfloat16*>(bias);
  if (vectorised) {
    residual_add_kernel<8><<<ceil_div(n / 8, kThreads), kThreads, 0, stream>>>(out_, a_, b_, bias_,
                                                                               n, C);
  } else {
    residual_add_kernel<1><<<ceil_div(n, kThreads), kThreads, 0, stream>>>(out_, a_, b_, bias_, n,
                                                                           C);
  }
  LOOM_CUDA_CHECK_LAUNCH("residual_add_kernel");
}

size_t layernorm_backward_scratch_floats(int N, int C) {
  LOOM_CHECK(N > 0 && C > 0, "layernorm_backward sizes must be positive: N", N, "C", C);
  return static_cast<size_t>(backward_chunks(N)) * 2 * static_cast<size_t>(C);
}

void layernorm_backward(bf16* dresidual, float* dweight, float* dbias, const bf16* dout,
                        const bf16* inp, const bf16* weight, const float* mean, const float* rstd,
                        int N, int C, float* scratch, cudaStream_t stream) {
  LOOM_CHECK(N > 0 && C > 0, "layernorm_backward sizes must be positive: N", N, "C", C);
  LOOM_CHECK(dresidual != nullptr && dweight != nullptr && dbias != nullptr && dout != nullptr &&
                 inp != nullptr && weight != nullptr && mean != nullptr && rstd != nullptr &&
                 scratch != nullptr,
             "layernorm_backward: all pointers must be non-null");
  // The column partials read dout after dresidual was updated.
  LOOM_CHECK(static_cast<const void*>(dresidual) != static_cast<const void*>(dout),
             "layernorm_backward: dresidual must not alias dout");
  auto* dresidual_ = reinterpret_cast<__nv_bfloat16*>(dresidual);
  const auto* dout_ = reinterpret_cast<const __nv_bfloat16*>(dout);
  const auto* inp_ = reinterpret_cast<const __nv_bfloat16*>(inp);
  const auto* weight_ = reinterpret_cast<const __nv_bfloat16*>(weight);

  const bool vectorised = C % 8 == 0 && aligned16(dresidual) && aligned16(dout) &&
                          aligned16(inp) && aligned16(weight);
  const int grid = ceil_div(N, kRowsPerBlock);
  const int block = kRowsPerBlock * kWarp;
  if (vectorised) {
    layernorm_backward_input_kernel<8><<<grid, block, 0, stream>>>(dresidual_, dout_, inp_,
                                                                   weight_, mean, rstd, N, C);
  } else {
    layernorm_backward_input_kernel<1><<<grid, block, 0, stream>>>(dresidual_, dout_, inp_,
                                                                   weight_, mean, rstd, N, C);
  }
  LOOM_CUDA_CHECK_LAUNCH("layernorm_backward_input_kernel");

  const int chunks = backward_chunks(N);
  const int rows_per_chunk = ceil_div(N, chunks);
  const dim3 partial_grid(static_cast<unsigned>(ceil_div(C, kColumns)), static_cast<unsigned>(chunks));
  const dim3 partial_block(kColumns, kRowLanes);
  layernorm_backward_partial_kernel<<<partial_grid, partial_block, 0, stream>>>(
      scratch, dout_, inp_, mean, rstd, N, C, rows_per_chunk);
  LOOM_CUDA_CHECK_LAUNCH("layernorm_backward_partial_kernel");
  constexpr int kSumThreads = 256;
  layernorm_backward_sum_kernel<<<ceil_div(C, kSumThreads), kSumThreads, 0, stream>>>(
      dweight, dbias, scratch, chunks, C);
  LOOM_CUDA_CHECK_LAUNCH("layernorm_backward_sum_kernel");
}

}  // namespace loom::kernels::cuda
