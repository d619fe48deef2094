// AdamW over the flat parameter arena, the deterministic global-norm pieces, and the fp32 <-> bf16
// casts, on the GPU.
//
// adamw_update is one grid-stride launch over the whole arena (a capped grid of 256-thread
// blocks). Each element binary-searches its segment in the device table (a few loads of a table
// of a few hundred entries, which stays in L1), updates master, m and v with the formula the CPU
// twin runs (cpu::adamw_update_element, compiled for both) and writes the bf16 copy. It moves
// 30 bytes per element with coalesced scalar accesses: bandwidth-bound, like torch's fused AdamW.
//
// sum_of_squares runs a fixed grid (kNormBlocks x kNormThreads) whatever n is: element i always
// lands in the same thread, each thread adds its elements in the same order, and the block and
// final trees have a fixed shape, so the result is bitwise reproducible. Sums are in double.
#include "kernels/cuda/adamw.h"

#include <cstdint>

#include "core/base/check.h"
#include "core/base/cuda/check.h"

namespace loom::kernels::cuda {
namespace {

constexpr int kUpdateThreads = 256;
constexpr int kUpdateMaxBlocks = 4096;  // grid-stride beyond 1M elements
constexpr int kNormBlocks = 1024;
constexpr int kNormThreads = 512;
constexpr int kCastThreads = 256;
constexpr int kCastMaxBlocks = 4096;

__device__ __forceinline__ uint16_t float_to_bf16_bits(float value) { return float_to_bf16(value).bits; }

__device__ __forceinline__ float bf16_bits_to_float(uint16_t bits) { return bf16_to_float(bf16{bits}); }

// The segment holding element i, or -1 where i lies in none (arena padding).
__device__ int find_segment(const AdamWSegment* segments, int num_segments, int64_t i) {
  int lo = 0;
  int hi = num_segments;
  while (lo < hi) {  // lo ends as the number of segments that begin at or before i
    const int mid = lo + (hi - lo) / 2;
    if (segments[mid].begin <= i) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  if (lo == 0) return -1;
  return i < segments[lo - 1].end ? lo - 1 : -1;
}

// Step constants with and without weight decay; they differ only in .decay.
struct UpdateConstants {
  cpu::AdamWStepConstants with_decay;
  float no_decay;  // 1 - lr * 0 = 1
  float max_norm;
};

__global__ void __launch_bounds__(kUpdateThreads)
    adamw_update_kernel(float* __restrict__ master, uint16_t* __restrict__ params,
                        const float* __restrict__ grad, float* __restrict__ m,
                        float* __restrict__ v, int64_t n, const AdamWSegment* segments,
                        int num_segments, const float* global_norm, UpdateConstants k) {
  const float norm = *global_norm;
  if (!isfinite(norm)) return;  // a skipped step: nothing changes
  const float scale = cpu::clip_scale(norm, k.max_norm);
  cpu::AdamWStepConstants c = k.with_decay;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const int s = find_segment(segments, num_segments, i);
    if (s < 0) continue;
    c.decay = segments[s].decay ? k.with_decay.decay : k.no_decay;
    float p = master[i];
    float mi = m[i];
    float vi = v[i];
    cpu::adamw_update_element(p, mi, vi, grad[i] * scale, c);
    master[i] = p;
    m[i] = mi;
    v[i] = vi;
    params[i] = float_to_bf16_bits(p);
  }
}

// partials[block] = this block's sum of x[i]^2 over its grid-strided elements, in double.
__global__ void __launch_bounds__(kNormThreads)
    sum_of_squares_partials_kernel(double* __restrict__ partials, const float* __restrict__ x,
                                   int64_t n) {
  __shared__ double tree[kNormThreads];
  const int64_t stride = static_cast<int64_t>(kNormBlocks) * kNormThreads;
  int64_t i = static_cast<int64_t>(blockIdx.x) * kNormThreads + threadIdx.x;
  double sum = 0.0;
  // Four loads in flight per thread; the adds stay in index order.
  for (; i + 3 * stride < n; i += 4 * stride) {
    const double a = x[i];
    const double b = x[i + stride];
    const double c = x[i + 2 * stride];
    const double d = x[i + 3 * stride];
    sum += a * a;
    sum += b * b;
    sum += c * c;
    sum += d * d;
  }
  for (; i < n; i += stride) {
    const double a = x[i];
    sum += a * a;
  }
  tree[threadIdx.x] = sum;
  __syncthreads();
  for (int width = kNormThreads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) tree[threadIdx.x] += tree[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[blockIdx.x] = tree[0];
}

// result (or result + result's old value) = the sum of the kNormBlocks partials, by a fixed tree.
__global__ void __launch_bounds__(kNormBlocks)
    sum_of_squares_total_kernel(float* result, const double* __restrict__ partials,
                                bool accumulate) {
  __shared__ double tree[kNormBlocks];
  tree[threadIdx.x] = partials[threadIdx.x];
  __syncthreads();
  for (int width = kNormBlocks / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) tree[threadIdx.x] += tree[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const double total = accumulate ? static_cast<double>(*result) + tree[0] : tree[0];
    *result = static_cast<float>(total);
  }
}

__global__ void finish_norm_kernel(float* result) { *result = sqrtf(*result); }

// kWidth elements per access where both pointers allow it (4: 16-byte fp32 loads and 8-byte bf16
// stores); the n % kWidth tail elements are done one by one.
template <int kWidth>
__global__ void __launch_bounds__(kCastThreads)
    f32_to_bf16_kernel(uint16_t* __restrict__ out, const float* __restrict__ in, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t vectors = n / kWidth;
  if constexpr (kWidth == 4) {
    for (int64_t k = first; k < vectors; k += stride) {
      const float4 x = reinterpret_cast<const float4*>(in)[k];
      ushort4 y;
      y.x = float_to_bf16_bits(x.x);
      y.y = float_to_bf16_bits(x.y);
      y.z = float_to_bf16_bits(x.z);
      y.w = float_to_bf16_bits(x.w);
      reinterpret_cast<ushort4*>(out)[k] = y;
    }
  }
  for (int64_t i = (kWidth == 1 ? 0 : vectors * kWidth) + first; i < n; i += stride) {
    out[i] = float_to_bf16_bits(in[i]);
  }
}

template <int kWidth>
__global__ void __launch_bounds__(kCastThreads)
    bf16_to_f32_kernel(float* __restrict__ out, const uint16_t* __restrict__ in, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t vectors = n / kWidth;
  if constexpr (kWidth == 4) {
    for (int64_t k = first; k < vectors; k += stride) {
      const ushort4 x = reinterpret_cast<const ushort4*>(in)[k];
      reinterpret_cast<float4*>(out)[k] =
          make_float4(bf16_bits_to_float(x.x), bf16_bits_to_float(x.y),
                      bf16_bits_to_float(x.z), bf16_bits_to_float(x.w));
    }
  }
  for (int64_t i = (kWidth == 1 ? 0 : vectors * kWidth) + first; i < n; i += stride) {
    out[i] = bf16_bits_to_float(in[i]);
  }
}

bool aligned(const void* pointer, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(pointer) % bytes == 0;
}

int cast_blocks(int64_t n) {
  const int64_t blocks = (n / 4 + kCastThreads - 1) / kCastThreads;
  return static_cast<int>(blocks < 1 ? 1 : (blocks > kCastMaxBlocks ? kCastMaxBlocks : blocks));
}

}  // namespace

void adamw_update(float* master, bf16* params, const float* grad, float* m, float* v, int64_t n,
                  const AdamWSegment* segments, int num_segments, const float* global_norm,
                  const AdamWHyper& hyper, cudaStream_t stream) {
  LOOM_CHECK(n >= 0 && num_segments >= 0, "adamw_update: element count", n, "segments",
             num_segments, "must not be negative");
  LOOM_CHECK(hyper.step >= 1, "adamw_update: step", hyper.step, "is 1-based and must be >= 1");
  if (n == 0 || num_segments == 0) return;
  LOOM_CHECK(master != nullptr && params != nullptr && grad != nullptr && m != nullptr &&
                 v != nullptr && segments != nullptr && global_norm != nullptr,
             "adamw_update: a null buffer for", n, "elements");
  cpu::AdamWHyper step;
  step.lr = hyper.lr;
  step.beta1 = hyper.beta1;
  step.beta2 = hyper.beta2;
  step.eps = hyper.eps;
  step.step = hyper.step;
  UpdateConstants k;
  step.weight_decay = 0.0f;
  k.no_decay = cpu::adamw_step_constants(step).decay;
  step.weight_decay = hyper.weight_decay;
  k.with_decay = cpu::adamw_step_constants(step);
  k.max_norm = hyper.max_norm;
  const int64_t blocks = (n + kUpdateThreads - 1) / kUpdateThreads;
  const int grid = static_cast<int>(blocks < kUpdateMaxBlocks ? blocks : kUpdateMaxBlocks);
  adamw_update_kernel<<<grid, kUpdateThreads, 0, stream>>>(
      master, reinterpret_cast<uint16_t*>(params), grad, m, v, n, segments, num_segments,
      global_norm, k);
  LOOM_CUDA_CHECK_LAUNCH("adamw_update_kernel");
}

size_t gradient_norm_scratch_floats() {
  return static_cast<size_t>(kNormBlocks) * (sizeof(double) / sizeof(float));
}

void sum_of_squares(float* result, const float* x, int64_t n, bool accumulate, float* scratch,
                    cudaStream_t stream) {
  LOOM_CHECK(n >= 0, "sum_of_squares: element count", n, "must not be negative");
  LOOM_CHECK(result != nullptr && scratch != nullptr && (x != nullptr || n == 0),
             "sum_of_squares: a null buffer for", n, "elements");
  LOOM_CHECK(aligned(scratch, sizeof(double)), "sum_of_squares: scratch at",
             reinterpret_cast<uintptr_t>(scratch), "must be 8-byte aligned (it holds doubles)");
  auto* partials = reinterpret_cast<double*>(scratch);  // (kNormBlocks)
  sum_of_squares_partials_kernel<<<kNormBlocks, kNormThreads, 0, stream>>>(partials, x, n);
  LOOM_CUDA_CHECK_LAUNCH("sum_of_squares_partials_kernel");
  sum_of_squares_total_kernel<<<1, kNormBlocks, 0, stream>>>(result, partials, accumulate);
  LOOM_CUDA_CHECK_LAUNCH("sum_of_squares_total_kernel");
}

void finish_norm(float* result, cudaStream_t stream) {
  LOOM_CHECK(result != nullptr, "finish_norm: null result");
  finish_norm_kernel<<<1, 1, 0, stream>>>(result);
  LOOM_CUDA_CHECK_LAUNCH("finish_norm_kernel");
}

void f32_to_bf16(bf16* out, const float* in, int64_t n, cudaStream_t stream) {
  LOOM_CHECK(n >= 0, "f32_to_bf16: element count", n, "must not be negative");
  if (n == 0) return;
  LOOM_CHECK(out != nullptr && in != nullptr, "f32_to_bf16: a null buffer for", n, "elements");
  auto* out_bits = reinterpret_cast<uint16_t*>(out);
  if (aligned(in, 16) && aligned(out, 8)) {
    f32_to_bf16_kernel<4><<<cast_blocks(n), kCastThreads, 0, stream>>>(out_bits, in, n);
  } else {
    f32_to_bf16_kernel<1><<<cast_blocks(n), kCastThreads, 0, stream>>>(out_bits, in, n);
  }
  LOOM_CUDA_CHECK_LAUNCH("f32_to_bf16_kernel");
}

void bf16_to_f32(float* out, const bf16* in, int64_t n, cudaStream_t stream) {
  LOOM_CHECK(n >= 0, "bf16_to_f32: element count", n, "must not be negative");
  if (n == 0) return;
  LOOM_CHECK(out != nullptr && in != nullptr, "bf16_to_f32: a null buffer for", n, "elements");
  const auto* in_bits = reinterpret_cast<const uint16_t*>(in);
  if (aligned(in, 8) && aligned(out, 16)) {
    bf16_to_f32_kernel<4><<<cast_blocks(n), kCastThreads, 0, stream>>>(out, in_bits, n);
  } else {
    bf16_to_f32_kernel<1><<<cast_blocks(n), kCastThreads, 0, stream>>>(out, in_bits, n);
  }
  LOOM_CUDA_CHECK_LAUNCH("bf16_to_f32_kernel");
}

}  // namespace loom::kernels::cuda
