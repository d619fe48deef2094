// One decoding step of causal attention over a KV cache, on the GPU (CPU twin: attention_decode
// in kernels/cpu/attention.h, same layouts and contract): the queries of one new position of each
// sequence attend over the keys and values of all its positions so far.
//
// Convention: inference only, no backward. out is OVERWRITTEN; row pos of the caches is
// overwritten with the new key and value and their other rows are left as they are.
#pragma once

#include "kernels/cuda/common.h"

namespace loom::kernels::cuda {

// The largest head size (C / NH) attention_decode takes: each of a warp's 32 lanes holds up to 8
// channels of a head's output in registers.
constexpr int kAttentionDecodeMaxHeadSize = 256;

// qkv (B, C + 2*NKV*HS) bf16 holds [q: NH*HS | k: NKV*HS | v: NKV*HS] of position `pos` of each of
// B sequences, HS = C / NH; query head h reads kv head h / (NH / NKV) (NKV divides NH). Its k and v
// are written into row pos of k_cache and v_cache (B, max_T, NKV*HS) bf16; then out (B, C) bf16 =
// softmax(q k^T / sqrt(HS)) v over cache rows 0..pos (rows after pos are never read). Scores,
// softmax and sums in fp32; out rounded once. Any head size up to kAttentionDecodeMaxHeadSize; B
// at most 65535 (the grid is (NH, B)); no alignment needed beyond bf16's own.
void attention_decode(bf16* out, bf16* k_cache, bf16* v_cache, const bf16* qkv, int B, int pos, int max_T, int C,
                      int NH, int NKV, cudaStream_t stream);

}  // namespace loom::kernels::cuda
