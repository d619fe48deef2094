// SwiGLU forward and backward on the GPU.
//
// Memory bound and elementwise: one thread per output element pair (bf16x2, 4-byte loads) where F
// is even and the buffers 4-byte aligned, else one per element. Thread i handles out[row, c]
// (row = i / F), reading gate at gu[row, c] and up at gu[row, F + c]. The arithmetic is fp32 with
// the accurate expf (the inputs are bf16, so the result's error is the final rounding):
// silu(g) = g / (1 + e), silu'(g) = s (1 + g e s), s = 1 / (1 + e), e = exp(-g). Beyond
// |g| > 80 the exact tail value is selected (exp overflow would make g e s inf * 0 = NaN).
#include "kernels/cuda/swiglu.h"

#include <cuda_bf16.h>

#include "core/base/check.h"
#include "core/base/cuda/check.h"

namespace loom::kernels::cuda {
namespace {

constexpr float kTailX = 80.0f;
constexpr int kElementwiseThreads = 256;

__device__ __forceinline__ float silu(float g) {
  const float y = g / (1.0f + expf(-g));
  return g > kTailX ? g : (g < -kTailX ? 0.0f : y);
}

__device__ __forceinline__ float silu_grad(float g) {
  const float e = expf(-g);
  const float s = 1.0f / (1.0f + e);
  const float grad = s * (1.0f + g * e * s);
  return g > kTailX ? 1.0f : (g < -kTailX ? 0.0f : grad);
}

template <bool kPair>
__global__ void swiglu_forward_kernel(__nv_bfloat16* __restrict__ out, const __nv_bfloat16* __restrict__ gu,
                                      int64_t n, int F) {
  constexpr int kWidth = kPair ? 2 : 1;
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kWidth;
  if (i >= n) return;
  const int64_t row = i / F;
  const int64_t gate = i + row * F;  // row * 2F + c
  if constexpr (kPair) {
    const float2 g = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(gu + gate));
    const float2 u = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(gu + gate + F));
    *reinterpret_cast<__nv_bfloat162*>(out + i) =
        __float22bfloat162_rn(make_float2(silu(g.x) * u.x, silu(g.y) * u.y));
  } else {
    out[i] = __float2bfloat16_rn(silu(__bfloat162float(gu[gate])) * __bfloat162float(gu[gate + F]));
  }
}

template <bool kPair>
__global__ void swiglu_backward_kernel(__nv_bfloat16* __restrict__ dgu, const __nv_bfloat16* __restrict__ gu,
                                       const __nv_bfloat16* __restrict__ dout, int64_t n, int F) {
  constexpr int kWidth = kPair ? 2 : 1;
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kWidth;
  if (i >= n) return;
  const int64_t row = i / F;
  const int64_t gate = i + row * F;
  if constexpr (kPair) {
    const float2 g = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(gu + gate));
    const float2 u = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(gu + gate + F));
    const float2 dy = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(dout + i));
    *reinterpret_cast<__nv_bfloat162*>(dgu + gate) =
        __float22bfloat162_rn(make_float2(dy.x * u.x * silu_grad(g.x), dy.y * u.y * silu_grad(g.y)));
    *reinterpret_cast<__nv_bfloat162*>(dgu + gate + F) =
        __float22bfloat162_rn(make_float2(dy.x * silu(g.x), dy.y * silu(g.y)));
  } else {
    const float g = __bfloat162float(gu[gate]), u = __bfloat162float(gu[gate + F]);
    const float dy = __bfloat162float(dout[i]);
    dgu[gate] = __float2bfloat16_rn(dy * u * silu_grad(g));
    dgu[gate + F] = __float2bfloat16_rn(dy * silu(g));
  }
}

bool aligned(const void* p, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

}  // namespace

void swiglu_forward(bf16* out, const bf16* gu, int N, int F, cudaStream_t stream) {
  LOOM_CHECK(N > 0 && F > 0, "swiglu_forward sizes must be positive: N", N, "F", F);
  LOOM_CHECK(out != nullptr && gu != nullptr, "swiglu_forward: out and gu must be non-null");
  const int64_t n = static_cast<int64_t>(N) * F;
  auto* out_ = reinterpret_cast<__nv_bfloat16*>(out);
  const auto* gu_ = reinterpret_cast<const __nv_bfloat16*>(gu);
  if (F % 2 == 0 && aligned(out, 4) && aligned(gu, 4)) {
    swiglu_forward_kernel<true><<<ceil_div(n / 2, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
        out_, gu_, n, F);
  } else {
    swiglu_forward_kernel<false><<<ceil_div(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
        out_, gu_, n, F);
  }
  LOOM_CUDA_CHECK_LAUNCH("swiglu_forward_kernel");
}

void swiglu_backward(bf16* dgu, const bf16* gu, const bf16* dout, int N, int F, cudaStream_t stream) {
  LOOM_CHECK(N > 0 && F > 0, "swiglu_backward sizes must be positive: N", N, "F", F);
  LOOM_CHECK(dgu != nullptr && gu != nullptr && dout != nullptr,
             "swiglu_backward: dgu, gu and dout must be non-null");
  const int64_t n = static_cast<int64_t>(N) * F;
  auto* dgu_ = reinterpret_cast<__nv_bfloat16*>(dgu);
  const auto* gu_ = reinterpret_cast<const __nv_bfloat16*>(gu);
  const auto* dout_ = reinterpret_cast<const __nv_bfloat16*>(dout);
  if (F % 2 == 0 && aligned(dgu, 4) && aligned(gu, 4) && aligned(dout, 4)) {
    swiglu_backward_kernel<true><<<ceil_div(n / 2, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
        dgu_, gu_, dout_, n, F);
  } else {
    swiglu_backward_kernel<false><<<ceil_div(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
        dgu_, gu_, dout_, n, F);
  }
  LOOM_CUDA_CHECK_LAUNCH("swiglu_backward_kernel");
}

}  // namespace loom::kernels::cuda
