// Softmax cross-entropy on the GPU: the fused one-shard kernel and the three vocab-parallel
// phases (formulas of the CPU twins, kernels/cpu/vocab_parallel_cross_entropy.h).
//
// Every kernel gives one block of kThreads threads to one row (N blocks; GPT-2 has N = B*T up to
// 64K rows of V = 50257). Threads walk the row in chunks of 8 bf16 (one 16-byte load) when the
// row stride and the pointer allow it, else one by one; a chunk that straddles V reads padding
// columns (still inside the row since stride is a multiple of 8) and masks them to -inf, whose
// exp is exactly 0. Statistics are fp32 and use expf (about 2 ulp; __expf's error grows with
// |x|, and x - max reaches -20 and below here). The fused kernel reads a row twice (statistics,
// then gradient) and writes it once: memory-bound, the second read mostly from L2.
//
// In place: the gradient of an element is written by the thread that read the element, and the
// one value another thread needs (the target logit, for the loss) is read before the block-wide
// reduction's barrier, which every thread passes before it writes.
//
// Phase 3 also runs in two parts: the losses alone (one thread per row) and the gradient alone
// (the phase-3 kernel told there is no loss to write).
#include "kernels/cuda/cross_entropy.h"

#include <cuda_bf16.h>

#include <cstdint>

#include "core/base/check.h"
#include "core/base/cuda/check.h"

namespace loom::kernels::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int32_t kIgnoreTarget = -1;
constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float bf16_bits_to_float(uint32_t bits) {
  return __uint_as_float(bits << 16);
}

__device__ __forceinline__ uint32_t float_to_bf16_bits(float value) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(value));
}

// x = the row's logits [j0, j0 + kWidth); columns at or past V read as -inf (exp gives 0).
template <int kWidth>
__device__ __forceinline__ void load_chunk(const uint16_t* row, int j0, int V,
                                           float (&x)[kWidth]) {
  if constexpr (kWidth == 8) {
    const uint4 raw = *reinterpret_cast<const uint4*>(row + j0);  // 16-byte aligned
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int w = 0; w < 4; ++w) {  // little-endian: the lower column is the low half
      x[2 * w] = bf16_bits_to_float(words[w] & 0xffffu);
      x[2 * w + 1] = __uint_as_float(words[w] & 0xffff0000u);
    }
  } else {
    x[0] = bf16_bits_to_float(row[j0]);
  }
#pragma unroll
  for (int i = 0; i < kWidth; ++i) {
    if (j0 + i >= V) x[i] = -INFINITY;
  }
}

template <int kWidth>
__device__ __forceinline__ void store_chunk(uint16_t* row, int j0, const float (&g)[kWidth]) {
  if constexpr (kWidth == 8) {
    uint4 raw;
    raw.x = float_to_bf16_bits(g[0]) | (float_to_bf16_bits(g[1]) << 16);
    raw.y = float_to_bf16_bits(g[2]) | (float_to_bf16_bits(g[3]) << 16);
    raw.z = float_to_bf16_bits(g[4]) | (float_to_bf16_bits(g[5]) << 16);
    raw.w = float_to_bf16_bits(g[6]) | (float_to_bf16_bits(g[7]) << 16);
    *reinterpret_cast<uint4*>(row + j0) = raw;
  } else {
    row[j0] = static_cast<uint16_t>(float_to_bf16_bits(g[0]));
  }
}

// A running maximum and the sum of exp(x - max) over the values seen.
struct Stats {
  float max;
  float sum;
};

__device__ __forceinline__ float shuffle_xor(float v, int lane_mask) {
  return __shfl_xor_sync(kFullMask, v, lane_mask);
}
__device__ __forceinline__ Stats shuffle_xor(Stats v, int lane_mask) {
  return Stats{shuffle_xor(v.max, lane_mask), shuffle_xor(v.sum, lane_mask)};
}

struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct StatsOp {
  __device__ Stats operator()(Stats a, Stats b) const {
    const float max = fmaxf(a.max, b.max);
    if (max == -INFINITY) return a;  // both empty: exp(-inf - -inf) would be NaN
    return Stats{max, a.sum * expf(a.max - max) + b.sum * expf(b.max - max)};
  }
};

// The reduction of `value` over the block (blockDim.x == kThreads), returned to every thread.
// Called by all threads of the block (it has barriers), at most once per kernel.
template <typename T, typename Op>
__device__ T block_reduce(T value, T identity, Op op) {
  __shared__ T per_warp[kWarps];
  __shared__ T total;
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int warp = static_cast<int>(threadIdx.x / 32);
#pragma unroll
  for (int mask = 16; mask > 0; mask /= 2) value = op(value, shuffle_xor(value, mask));
  if (lane == 0) per_warp[warp] = value;
  __syncthreads();
  if (warp == 0) {
    value = lane < kWarps ? per_warp[lane] : identity;
#pragma unroll
    for (int mask = 16; mask > 0; mask /= 2) value = op(value, shuffle_xor(value, mask));
    if (lane == 0) total = value;
  }
  __syncthreads();
  return total;
}

template <int kWidth>
__device__ void zero_row(uint16_t* row, int stride) {
  float zeros[kWidth];
#pragma unroll
  for (int i = 0; i < kWidth; ++i) zeros[i] = 0.0f;
  for (int j0 = static_cast<int>(threadIdx.x) * kWidth; j0 < stride; j0 += kThreads * kWidth) {
    store_chunk<kWidth>(row, j0, zeros);
  }
}

// Overwrites the row with dloss * (exp(x - max) / sum - onehot(target)) on [0, V) and 0 on
// [V, stride); a target outside [0, V) (another shard's) subtracts nothing.
template <int kWidth>
__device__ void write_gradient(uint16_t* row, int V, int stride, float max, float sum,
                               float dloss, int target) {
  const float factor = dloss / sum;
  for (int j0 = static_cast<int>(threadIdx.x) * kWidth; j0 < stride; j0 += kThreads * kWidth) {
    float g[kWidth];
    if (j0 < V) {
      float x[kWidth];
      load_chunk<kWidth>(row, j0, V, x);
#pragma unroll
      for (int i = 0; i < kWidth; ++i) {
        if (j0 + i < V) {
          g[i] = expf(x[i] - max) * factor;
          if (j0 + i == target) g[i] -= dloss;
        } else {
          g[i] = 0.0f;
        }
      }
    } else {
#pragma unroll
      for (int i = 0; i < kWidth; ++i) g[i] = 0.0f;
    }
    store_chunk<kWidth>(row, j0, g);
  }
}

// loss = max + log(sum) - target logit, in double as the CPU twin (one per row).
__device__ float row_loss(float max, float sum, float target_logit) {
  return static_cast<float>(static_cast<double>(max) + log(static_cast<double>(sum)) -
                            static_cast<double>(target_logit));
}

template <int kWidth>
__global__ void __launch_bounds__(kThreads)
    fused_cross_entropy_kernel(uint16_t* logits, float* losses, const int32_t* targets,
                               float dloss, int V, int stride) {
  uint16_t* row = logits + static_cast<int64_t>(blockIdx.x) * stride;  // (stride)
  const int32_t target = targets[blockIdx.x];
  if (target == kIgnoreTarget) {  // the same branch for the whole block
    zero_row<kWidth>(row, stride);
    if (threadIdx.x == 0) losses[blockIdx.x] = 0.0f;
    return;
  }
  Stats stats{-INFINITY, 0.0f};
  for (int j0 = static_cast<int>(threadIdx.x) * kWidth; j0 < V; j0 += kThreads * kWidth) {
    float x[kWidth];
    load_chunk<kWidth>(row, j0, V, x);
    float chunk_max = x[0];
#pragma unroll
    for (int i = 1; i < kWidth; ++i) chunk_max = fmaxf(chunk_max, x[i]);
    if (chunk_max > stats.max) {  // rescale the sum to the new maximum (0 * 0 the first time)
      stats.sum *= expf(stats.max - chunk_max);
      stats.max = chunk_max;
    }
#pragma unroll
    for (int i = 0; i < kWidth; ++i) stats.sum += expf(x[i] - stats.max);
  }
  const bool valid = target >= 0 && target < V;
  // Read before the reduction's barrier: after it, other threads overwrite the row.
  const float target_logit =
      threadIdx.x == 0 && valid ? bf16_bits_to_float(row[target]) : 0.0f;
  stats = block_reduce(stats, Stats{-INFINITY, 0.0f}, StatsOp{});
  if (threadIdx.x == 0) {
    // A target outside [-1, V) is the caller's bug: NaN makes it visible in the loss.
    losses[blockIdx.x] = valid ? row_loss(stats.max, stats.sum, target_logit) : NAN;
  }
  write_gradient<kWidth>(row, V, stride, stats.max, stats.sum, dloss, target);
}

template <int kWidth>
__global__ void __launch_bounds__(kThreads)
    row_max_kernel(float* row_max, const uint16_t* logits, int V_local, int stride) {
  const uint16_t* row = logits + static_cast<int64_t>(blockIdx.x) * stride;  // (stride)
  float max = -INFINITY;
  for (int j0 = static_cast<int>(threadIdx.x) * kWidth; j0 < V_local; j0 += kThreads * kWidth) {
    float x[kWidth];
    load_chunk<kWidth>(row, j0, V_local, x);
#pragma unroll
    for (int i = 0; i < kWidth; ++i) max = fmaxf(max, x[i]);
  }
  max = block_reduce(max, -INFINITY, MaxOp{});
  if (threadIdx.x == 0) row_max[blockIdx.x] = max;
}

template <int kWidth>
__global__ void __launch_bounds__(kThreads)
    sum_exp_kernel(float* sum_exp, float* target_logit, const uint16_t* logits,
                   const int32_t* targets, const float* row_max, int V_local, int stride,
                   int vocab_start) {
  const uint16_t* row = logits + static_cast<int64_t>(blockIdx.x) * stride;  // (stride)
  const float max = row_max[blockIdx.x];
  float sum = 0.0f;
  for (int j0 = static_cast<int>(threadIdx.x) * kWidth; j0 < V_local; j0 += kThreads * kWidth) {
    float x[kWidth];
    load_chunk<kWidth>(row, j0, V_local, x);
#pragma unroll
    for (int i = 0; i < kWidth; ++i) sum += expf(x[i] - max);
  }
  sum = block_reduce(sum, 0.0f, SumOp{});
  if (threadIdx.x == 0) {
    sum_exp[blockIdx.x] = sum;
    const int32_t target = targets[blockIdx.x];
    const int64_t local = static_cast<int64_t>(target) - vocab_start;
    const bool mine = target != kIgnoreTarget && local >= 0 && local < V_local;
    target_logit[blockIdx.x] = mine ? bf16_bits_to_float(row[local]) : 0.0f;
  }
}

template <int kWidth>
__global__ void __launch_bounds__(kThreads)
    loss_and_grad_kernel(uint16_t* logits, float* losses, const int32_t* targets,
                         const float* row_max, const float* sum_exp, const float* target_logit,
                         float dloss, int V_local, int stride, int vocab_start) {
  uint16_t* row = logits + static_cast<int64_t>(blockIdx.x) * stride;  // (stride)
  const int32_t target = targets[blockIdx.x];
  // losses null: the gradient alone (target_logit is then not read).
  if (target == kIgnoreTarget) {
    zero_row<kWidth>(row, stride);
    if (threadIdx.x == 0 && losses != nullptr) losses[blockIdx.x] = 0.0f;
    return;
  }
  const float max = row_max[blockIdx.x];
  const float sum = sum_exp[blockIdx.x];
  if (threadIdx.x == 0 && losses != nullptr) {
    losses[blockIdx.x] = row_loss(max, sum, target_logit[blockIdx.x]);
  }
  // A target on another shard lands outside [0, V_local) and subtracts nothing here.
  const int64_t local = static_cast<int64_t>(target) - vocab_start;
  const int local_target = local >= 0 && local < V_local ? static_cast<int>(local) : -1;
  write_gradient<kWidth>(row, V_local, stride, max, sum, dloss, local_target);
}

// One thread per row: the loss from the all-reduced statistics (phase 3 without the gradient).
__global__ void losses_kernel(float* __restrict__ losses, const float* __restrict__ row_max,
                              const float* __restrict__ sum_exp,
                              const float* __restrict__ target_logit,
                              const int32_t* __restrict__ targets, int N) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  losses[n] =
      targets[n] == kIgnoreTarget ? 0.0f : row_loss(row_max[n], sum_exp[n], target_logit[n]);
}

// 8 columns per access where every row starts 16-byte aligned: stride a multiple of 8 (which
// also keeps a chunk straddling V inside the row) and an aligned base.
bool vectorisable(const void* logits, int stride) {
  return stride % 8 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0;
}

void check_shape(const char* name, int N, int V, int stride) {
  // The column loops step by kThreads * 8 in int: keep them clear of overflow.
  LOOM_CHECK(N >= 0 && V > 0 && stride >= V && stride <= (1 << 30), name, ": N", N, "V", V,
             "stride", stride, "(need N >= 0, 0 < V <= stride <= 2^30)");
}

}  // namespace

void fused_cross_entropy(bf16* logits, float* losses, const int32_t* targets, float dloss, int N,
                         int V, int stride, cudaStream_t stream) {
  check_shape("fused_cross_entropy", N, V, stride);
  if (N == 0) return;
  auto* rows = reinterpret_cast<uint16_t*>(logits);
  if (vectorisable(logits, stride)) {
    fused_cross_entropy_kernel<8><<<N, kThreads, 0, stream>>>(rows, losses, targets, dloss, V,
                                                               stride);
  } else {
    fused_cross_entropy_kernel<1><<<N, kThreads, 0, stream>>>(rows, losses, targets, dloss, V,
                                                               stride);
  }
  LOOM_CUDA_CHECK_LAUNCH("fused_cross_entropy_kernel");
}

void vocab_parallel_row_max(float* row_max, const bf16* logits, int N, int V_local, int stride,
                            cudaStream_t stream) {
  check_shape("vocab_parallel_row_max", N, V_local, stride);
  if (N == 0) return;
  const auto* rows = reinterpret_cast<const uint16_t*>(logits);
  if (vectorisable(logits, stride)) {
    row_max_kernel<8><<<N, kThreads, 0, stream>>>(row_max, rows, V_local, stride);
  } else {
    row_max_kernel<1><<<N, kThreads, 0, stream>>>(row_max, rows, V_local, stride);
  }
  LOOM_CUDA_CHECK_LAUNCH("row_max_kernel");
}

void vocab_parallel_sum_exp(float* sum_exp, float* target_logit, const bf16* logits,
                            const int32_t* targets, const float* row_max, int N, int V_local,
                            int stride, int vocab_start, cudaStream_t stream) {
  check_shape("vocab_parallel_sum_exp", N, V_local, stride);
  LOOM_CHECK(vocab_start >= 0, "vocab_parallel_sum_exp: vocab_start", vocab_start,
             "must not be negative");
  if (N == 0) return;
  const auto* rows = reinterpret_cast<const uint16_t*>(logits);
  if (vectorisable(logits, stride)) {
    sum_exp_kernel<8><<<N, kThreads, 0, stream>>>(sum_exp, target_logit, rows, targets, row_max,
                                                   V_local, stride, vocab_start);
  } else {
    sum_exp_kernel<1><<<N, kThreads, 0, stream>>>(sum_exp, target_logit, rows, targets, row_max,
                                                   V_local, stride, vocab_start);
  }
  LOOM_CUDA_CHECK_LAUNCH("sum_exp_kernel");
}

void vocab_parallel_losses(float* losses, const float* row_max, const float* sum_exp,
                           const float* target_logit, const int32_t* targets, int N,
                           cudaStream_t stream) {
  LOOM_CHECK(N >= 0, "vocab_parallel_losses: N", N, "must not be negative");
  if (N == 0) return;
  LOOM_CHECK(losses != nullptr && row_max != nullptr && sum_exp != nullptr &&
                 target_logit != nullptr && targets != nullptr,
             "vocab_parallel_losses: every buffer must be non-null");
  constexpr int kRowThreads = 256;
  losses_kernel<<<ceil_div(N, kRowThreads), kRowThreads, 0, stream>>>(losses, row_max, sum_exp,
                                                                     target_logit, targets, N);
  LOOM_CUDA_CHECK_LAUNCH("losses_kernel");
}

void vocab_parallel_cross_entropy_backward(bf16* logits, const int32_t* targets,
                                           const float* row_max, const float* sum_exp, float dloss,
                                           int N, int V_local, int stride, int vocab_start,
                                           cudaStream_t stream) {
  check_shape("vocab_parallel_cross_entropy_backward", N, V_local, stride);
  LOOM_CHECK(vocab_start >= 0, "vocab_parallel_cross_entropy_backward: vocab_start", vocab_start,
             "must not be negative");
  if (N == 0) return;
  auto* rows = reinterpret_cast<uint16_t*>(logits);
  if (vectorisable(logits, stride)) {
    loss_and_grad_kernel<8><<<N, kThreads, 0, stream>>>(rows, nullptr, targets, row_max, sum_exp,
                                                         nullptr, dloss, V_local, stride,
                                                         vocab_start);
  } else {
    loss_and_grad_kernel<1><<<N, kThreads, 0, stream>>>(rows, nullptr, targets, row_max, sum_exp,
                                                         nullptr, dloss, V_local, stride,
                                                         vocab_start);
  }
  LOOM_CUDA_CHECK_LAUNCH("loss_and_grad_kernel");
}

void vocab_parallel_loss_and_grad(bf16* logits, float* losses, const int32_t* targets,
                                  const float* row_max, const float* sum_exp,
                                  const float* target_logit, float dloss, int N, int V_local,
                                  int stride, int vocab_start, cudaStream_t stream) {
  check_shape("vocab_parallel_loss_and_grad", N, V_local, stride);
  LOOM_CHECK(vocab_start >= 0, "vocab_parallel_loss_and_grad: vocab_start", vocab_start,
             "must not be negative");
  if (N == 0) return;
  auto* rows = reinterpret_cast<uint16_t*>(logits);
  if (vectorisable(logits, stride)) {
    loss_and_grad_kernel<8><<<N, kThreads, 0, stream>>>(rows, losses, targets, row_max, sum_exp,
                                                         target_logit, dloss, V_local, stride,
                                                         vocab_start);
  } else {
    loss_and_grad_kernel<1><<<N, kThreads, 0, stream>>>(rows, losses, targets, row_max, sum_exp,
                                                         target_logit, dloss, V_local, stride,
                                                         vocab_start);
  }
  LOOM_CUDA_CHECK_LAUNCH("loss_and_grad_kernel");
}

}  // namespace loom::kernels::cuda
