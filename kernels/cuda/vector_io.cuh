// What the row kernels share: loads and stores of kWidth consecutive bf16 values as floats
// (kWidth = 8 is one 16-byte access, the pointer 16-byte aligned; kWidth = 1 a scalar one), the
// rounding of floats to bf16, the residual sum of the fused norms, and the sum over a warp.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace loom::kernels::cuda {

// kWidth consecutive bf16 as floats: one 16-byte load for kWidth = 8, a scalar load for 1.
template <int kWidth>
__device__ __forceinline__ void load(float (&v)[kWidth], const __nv_bfloat16* p) {
  if constexpr (kWidth == 8) {
    const int4 raw = *reinterpret_cast<const int4*>(p);
    const auto* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 f = __bfloat1622float2(pairs[k]);
      v[2 * k] = f.x;
      v[2 * k + 1] = f.y;
    }
  } else {
    v[0] = __bfloat162float(*p);
  }
}

template <int kWidth>
__device__ __forceinline__ void store(__nv_bfloat16* p, const float (&v)[kWidth]) {
  if constexpr (kWidth == 8) {
    int4 raw;
    auto* pairs = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
    for (int k = 0; k < 4; ++k) pairs[k] = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
    *reinterpret_cast<int4*>(p) = raw;
  } else {
    *p = __float2bfloat16_rn(v[0]);
  }
}

// Rounds each value to bf16 and back: what a bf16 store followed by a load returns.
template <int kWidth>
__device__ __forceinline__ void round_to_bf16(float (&v)[kWidth]) {
#pragma unroll
  for (int k = 0; k < kWidth; ++k) v[k] = __bfloat162float(__float2bfloat16_rn(v[k]));
}

// The sum of v over the 32 lanes of a warp, on every lane; a butterfly, so the order of the
// additions is the same at every call (deterministic).
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// r = residual_in + delta + delta_bias, summed in that order in f32 (each may be null: absent)
// and rounded to bf16: kWidth elements of a row at `offset` (its first element) and column c.
// The residual stream the fused residual + norm kernels compute.
template <int kWidth>
__device__ __forceinline__ void residual_sum(float (&r)[kWidth], const __nv_bfloat16* residual_in,
                                             const __nv_bfloat16* delta, const __nv_bfloat16* delta_bias,
                                             int64_t offset, int c) {
  float t[kWidth];
  if (residual_in != nullptr) {
    load<kWidth>(r, residual_in + offset + c);
  } else {
#pragma unroll
    for (int k = 0; k < kWidth; ++k) r[k] = 0.0f;
  }
  if (delta != nullptr) {
    load<kWidth>(t, delta + offset + c);
#pragma unroll
    for (int k = 0; k < kWidth; ++k) r[k] += t[k];
  }
  if (delta_bias != nullptr) {
    load<kWidth>(t, delta_bias + c);
#pragma unroll
    for (int k = 0; k < kWidth; ++k) r[k] += t[k];
  }
  round_to_bf16<kWidth>(r);
}

}  // namespace loom::kernels::cuda
