// Decoding attention over a KV cache on the GPU: one thread block per (query head, sequence).
//
// A decoding step has one query per head, so there is no tile to put on the tensor cores: the
// work is reading the cache once, and the kernel is memory bound. With grouped-query heads the G =
// NH / NKV query heads of a kv head share its cache slice: the group's first block writes the new
// key and value into row pos of that slice, and every block of the group reads key pos from qkv
// itself (the same bits), so no block reads a row another may be writing. Then the block's
// kWarps warps split the keys 0..pos round-robin. A warp takes one key at a time: each lane
// multiplies its strided channels of q and k (consecutive lanes read consecutive bf16, so a key
// row is one coalesced read), a butterfly of shuffles sums the dot product, and the warp updates
// its online softmax (running max, running sum, and an fp32 output accumulator of 8 channels per
// lane, rescaled when the max grows). At the end the warps' partial results meet in shared
// memory and are combined in warp order. Every sum has a fixed order that depends on the sizes
// alone, so the result is bitwise reproducible; no shared memory grows with the cache length.
#include "kernels/cuda/attention_decode.h"

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "core/base/check.h"
#include "core/base/cuda/check.h"

namespace loom::kernels::cuda {
namespace {

using nv_bf16 = __nv_bfloat16;

constexpr int kWarp = 32;
constexpr int kWarps = 4;  // keys in flight per block; blocks are (NH x B), so a few warps each
constexpr int kThreads = kWarps * kWarp;
constexpr int kPerLane = kAttentionDecodeMaxHeadSize / kWarp;

// grid (NH, B), block kThreads. qkv rows are W = C + 2 * KV wide, KV = NKV * HS; the caches' row
// t of kv head kv of sequence b starts at (b * max_T + t) * KV + kv * HS.
__global__ void attention_decode_kernel(nv_bf16* __restrict__ out, nv_bf16* __restrict__ k_cache,
                                        nv_bf16* __restrict__ v_cache, const nv_bf16* __restrict__ qkv, int pos,
                                        int max_T, int C, int NH, int NKV, int HS, float scale) {
  __shared__ float q[kAttentionDecodeMaxHeadSize];
  __shared__ float warp_max[kWarps], warp_sum[kWarps];
  __shared__ float warp_out[kWarps][kAttentionDecodeMaxHeadSize];
  const int h = blockIdx.x, b = blockIdx.y;
  const int group = NH / NKV;
  const int kv = h / group;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t KV = static_cast<int64_t>(NKV) * HS;
  const nv_bf16* row = qkv + static_cast<int64_t>(b) * (C + 2 * KV);
  const nv_bf16* q_new = row + static_cast<int64_t>(h) * HS;
  const nv_bf16* k_new = row + C + static_cast<int64_t>(kv) * HS;
  const nv_bf16* v_new = k_new + KV;
  const int64_t head0 = static_cast<int64_t>(b) * max_T * KV + static_cast<int64_t>(kv) * HS;
  const int64_t new_row = head0 + static_cast<int64_t>(pos) * KV;
  const bool writes_cache = h % group == 0;  // block-uniform
  for (int d = threadIdx.x; d < HS; d += kThreads) {
    if (writes_cache) {
      k_cache[new_row + d] = k_new[d];
      v_cache[new_row + d] = v_new[d];
    }
    q[d] = __bfloat162float(q_new[d]);
  }
  // Makes q (shared) visible to the whole block.
  __syncthreads();

  float running_max = -INFINITY, running_sum = 0.0f;
  float acc[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) acc[i] = 0.0f;
  for (int j = warp; j <= pos; j += kWarps) {
    const nv_bf16* key = j == pos ? k_new : k_cache + head0 + static_cast<int64_t>(j) * KV;
    const nv_bf16* value = j == pos ? v_new : v_cache + head0 + static_cast<int64_t>(j) * KV;
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int d = lane + i * kWarp;
      if (d < HS) dot += q[d] * __bfloat162float(key[d]);
    }
#pragma unroll
    for (int offset = kWarp / 2; offset > 0; offset /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
    const float score = dot * scale;
    const float new_max = fmaxf(running_max, score);
    const float rescale = expf(running_max - new_max);  // 0 for the first key (-inf)
    const float p = expf(score - new_max);
    running_sum = running_sum * rescale + p;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int d = lane + i * kWarp;
      if (d < HS) acc[i] = acc[i] * rescale + p * __bfloat162float(value[d]);
    }
    running_max = new_max;
  }
  if (lane == 0) {
    warp_max[warp] = running_max;  // -inf for a warp without keys (pos < kWarps - 1)
    warp_sum[warp] = running_sum;
  }
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + i * kWarp;
    if (d < HS) warp_out[warp][d] = acc[i];
  }
  __syncthreads();

  // Warp 0 always has key 0, so the block's max is finite and a keyless warp weighs exp(-inf) = 0.
  float block_max = warp_max[0];
  for (int w = 1; w < kWarps; ++w) block_max = fmaxf(block_max, warp_max[w]);
  float weight[kWarps];
  float total = 0.0f;
  for (int w = 0; w < kWarps; ++w) {
    weight[w] = expf(warp_max[w] - block_max);
    total += warp_sum[w] * weight[w];
  }
  const float inv_total = 1.0f / total;
  nv_bf16* o = out + static_cast<int64_t>(b) * C + static_cast<int64_t>(h) * HS;
  for (int d = threadIdx.x; d < HS; d += kThreads) {
    float value = 0.0f;
    for (int w = 0; w < kWarps; ++w) value += warp_out[w][d] * weight[w];
    o[d] = __float2bfloat16_rn(value * inv_total);
  }
}

}  // namespace

void attention_decode(bf16* out, bf16* k_cache, bf16* v_cache, const bf16* qkv, int B, int pos, int max_T, int C,
                      int NH, int NKV, cudaStream_t stream) {
  LOOM_CHECK(B > 0 && max_T > 0 && C > 0 && NH > 0 && NKV > 0, "attention_decode needs positive sizes, got B", B,
             "max_T", max_T, "C", C, "NH", NH, "NKV", NKV);
  LOOM_CHECK(C % NH == 0, "attention_decode needs n_head", NH, "to divide n_embd", C);
  LOOM_CHECK(NH % NKV == 0, "attention_decode needs n_kv_head", NKV, "to divide n_head", NH);
  LOOM_CHECK(C / NH <= kAttentionDecodeMaxHeadSize, "attention_decode takes head sizes of at most",
             kAttentionDecodeMaxHeadSize, "(C / NH), got", C / NH);
  LOOM_CHECK(B <= 65535, "attention_decode launches an (NH, B) grid: B", B, "must be at most 65535");
  LOOM_CHECK(pos >= 0 && pos < max_T, "attention_decode: position", pos, "outside the cache of", max_T,
             "positions");
  const int HS = C / NH;
  const dim3 grid(NH, B);
  attention_decode_kernel<<<grid, kThreads, 0, stream>>>(
      reinterpret_cast<nv_bf16*>(out), reinterpret_cast<nv_bf16*>(k_cache), reinterpret_cast<nv_bf16*>(v_cache),
      reinterpret_cast<const nv_bf16*>(qkv), pos, max_T, C, NH, NKV, HS, 1.0f / std::sqrt(static_cast<float>(HS)));
  LOOM_CUDA_CHECK_LAUNCH("attention_decode_kernel");
}

}  // namespace loom::kernels::cuda
