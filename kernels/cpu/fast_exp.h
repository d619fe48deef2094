// exp(x) as a branch-free polynomial that gcc vectorises.
//
// glibc's expf is a scalar call without -ffast-math, and softmax (attention, cross-entropy) and
// GELU take one exp per element: with it they would dominate a training step. Cephes' expf
// scheme: x = n ln2 + r with |r| <= ln2/2, exp(r) by a degree-6 polynomial, 2^n assembled from
// exponent bits; about 2 ulp. Inputs are clamped to [-87, 88], the range where exp is a normal
// float: below it the result is ~1e-38 instead of a denormal or 0, which no softmax sum or
// sigmoid can notice. NaN propagates.
#pragma once

#include <bit>
#include <cstdint>

namespace loom::kernels::cpu {

inline float fast_exp(float x) {
  x = x > 88.0f ? 88.0f : x;
  x = x < -87.0f ? -87.0f : x;
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer in the low bits
  const float t = x * 1.44269504088896341f + shifter;
  const float n = t - shifter;
  float r = x - n * 0.693359375f;  // ln2 split in two parts for an exact reduction
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (std::bit_cast<int32_t>(t) - std::bit_cast<int32_t>(shifter) + 127) << 23;
  return p * std::bit_cast<float>(bits);
}

}  // namespace loom::kernels::cpu
