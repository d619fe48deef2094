// Loads and stores of kWidth consecutive bf16 values as floats, shared by the row kernels:
// kWidth = 8 is one 16-byte access (the pointer must be 16-byte aligned), kWidth = 1 a scalar one.
#pragma once

#include <cuda_bf16.h>

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

}  // namespace loom::kernels::cuda
