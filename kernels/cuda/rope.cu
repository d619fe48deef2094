// Rotary position embeddings forward and backward on the GPU.
//
// Memory bound: each element of q and k is read and written once. A block per row amortises the
// row's cos and sin (HS / 2 sincosf, each a few dozen instructions, more for the large angles of
// far positions) over its NH + NKV heads. The backward is the forward with sin negated (exact), so
// the two are exact transposes of each other, as on the CPU.
#include <cuda_bf16.h>

#include <algorithm>
#include <climits>

#include "core/base/check.h"
#include "core/base/cuda/check.h"
#include "kernels/cuda/rope.h"
#include "kernels/cuda/vector_io.cuh"

namespace loom::kernels::cuda {
namespace {

constexpr int kMaxThreads = 256;

// Block n rotates row n. kWidth consecutive pairs per thread (8: 16-byte loads; 1: scalar).
template <int kWidth>
__global__ void rope_kernel(__nv_bfloat16* __restrict__ qkv, const float* __restrict__ inv_freq, int T,
                            int rotated_heads, int64_t width, int half, int first_position, float sign,
                            const int32_t* __restrict__ doc_starts) {
  extern __shared__ float cos_sin[];  // [cos (half) | sign * sin (half)]
  const int64_t n = blockIdx.x;
  const int t = static_cast<int>(n % T) - (doc_starts ? doc_starts[n] : 0);  // from its document's start
  const float position = static_cast<float>(first_position + t);
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    float s, c;
    sincosf(position * inv_freq[i], &s, &c);
    cos_sin[i] = c;
    cos_sin[half + i] = sign * s;
  }
  __syncthreads();
  __nv_bfloat16* row = qkv + n * width;  // ((NH + 2 NKV) * HS)
  const int per_head = half / kWidth;
  for (int k = threadIdx.x; k < rotated_heads * per_head; k += blockDim.x) {
    const int head = k / per_head, i = (k - head * per_head) * kWidth;
    __nv_bfloat16* x = row + static_cast<int64_t>(head) * 2 * half + i;  // first half of the head
    __nv_bfloat16* y = x + half;                                         // second half
    float a[kWidth], b[kWidth];
    load<kWidth>(a, x);
    load<kWidth>(b, y);
#pragma unroll
    for (int j = 0; j < kWidth; ++j) {
      const float c = cos_sin[i + j], s = cos_sin[half + i + j];
      const float xa = a[j], yb = b[j];
      a[j] = xa * c - yb * s;
      b[j] = yb * c + xa * s;
    }
    store<kWidth>(x, a);
    store<kWidth>(y, b);
  }
}

void check_sizes(const char* op, const void* qkv, const float* inv_freq, int B, int T, int NH, int NKV, int HS,
                 int first_position) {
  LOOM_CHECK(B > 0 && T > 0 && NH > 0 && NKV > 0 && HS > 0, op, "sizes must be positive: B", B, "T", T, "NH", NH, "NKV",
             NKV, "HS", HS);
  LOOM_CHECK(HS % 2 == 0 && HS <= kRopeMaxHeadSize, op, ": the head size", HS, "must be even and at most",
             kRopeMaxHeadSize);
  LOOM_CHECK(first_position >= 0 && first_position <= INT_MAX - (T - 1), op, ": positions", first_position, "..",
             static_cast<int64_t>(first_position) + T - 1, "outside 0 ..", INT_MAX);
  LOOM_CHECK(static_cast<int64_t>(B) * T <= INT_MAX, op, ": B * T =", static_cast<int64_t>(B) * T,
             "rows, more than a grid of one block per row takes (2^31 - 1)");
  LOOM_CHECK(qkv != nullptr && inv_freq != nullptr, op, ": qkv and inv_freq must be non-null");
}

void launch(const char* op, bf16* qkv, const float* inv_freq, int B, int T, int NH, int NKV, int HS, int first_position,
            float sign, cudaStream_t stream, const int32_t* doc_starts) {
  check_sizes(op, qkv, inv_freq, B, T, NH, NKV, HS, first_position);
  const int half = HS / 2, rotated_heads = NH + NKV;
  const int64_t width = static_cast<int64_t>(NH + 2 * NKV) * HS;
  const bool wide = half % 8 == 0 && reinterpret_cast<uintptr_t>(qkv) % 16 == 0;
  const int64_t work = static_cast<int64_t>(rotated_heads) * half / (wide ? 8 : 1);
  const int threads =
      static_cast<int>(std::min<int64_t>(kMaxThreads, ceil_div(std::max<int64_t>(work, half), 32) * 32));
  const int blocks = B * T;
  const size_t shared = static_cast<size_t>(HS) * sizeof(float);
  auto* qkv_ = reinterpret_cast<__nv_bfloat16*>(qkv);
  if (wide) {
    rope_kernel<8>
        <<<blocks, threads, shared, stream>>>(qkv_, inv_freq, T, rotated_heads, width, half, first_position, sign,
                                              doc_starts);
  } else {
    rope_kernel<1>
        <<<blocks, threads, shared, stream>>>(qkv_, inv_freq, T, rotated_heads, width, half, first_position, sign,
                                              doc_starts);
  }
  LOOM_CUDA_CHECK_LAUNCH("rope_kernel");
}

}  // namespace

void rope_forward(bf16* qkv, const float* inv_freq, int B, int T, int NH, int NKV, int HS, int first_position,
                  cudaStream_t stream, const int32_t* doc_starts) {
  launch("rope_forward", qkv, inv_freq, B, T, NH, NKV, HS, first_position, 1.0f, stream, doc_starts);
}

void rope_backward(bf16* dqkv, const float* inv_freq, int B, int T, int NH, int NKV, int HS, int first_position,
                   cudaStream_t stream, const int32_t* doc_starts) {
  launch("rope_backward", dqkv, inv_freq, B, T, NH, NKV, HS, first_position, -1.0f, stream, doc_starts);
}

}  // namespace loom::kernels::cuda
