// Causal self-attention with grouped-query heads, tiled (CPU reference path).
//
// qkv holds, for each position, [q: NH*HS | k: NKV*HS | v: NKV*HS], HS = C / NH the head size and
// C = NH * HS the width of q and of out. Query head h uses q columns [h*HS, (h+1)*HS) and reads
// key/value head h / (NH / NKV): kv head j serves the consecutive query heads j*G .. j*G+G-1,
// G = NH / NKV (NKV == NH is multi-head attention, NKV == 1 multi-query). Scores are scaled by
// 1/sqrt(HS). The whole T x T score matrix is never materialised for all heads at once: work is
// split into (batch, head, query tile) units, each of which holds at most one tile of scores, and
// the backward recomputes scores from the saved log-sum-exp (as flash attention does) instead of
// storing probabilities. K and V are read in place, never repeated per query head.
//
// Document masking (packed sequences): doc_starts (B, T), when not null, gives for each position
// t of a row the position where its document begins (0 <= doc_starts[t] <= t, non-decreasing, and
// either doc_starts[t - 1] or t). Query i then sees keys doc_starts[i] .. i only, as if each
// document were a sequence of its own; null is one document per row. Key tiles before a query
// tile's first document are skipped, so packing also saves the masked work.
//
// Backward convention: this kernel ACCUMULATES into dqkv (the backend zeroes it first, so the op
// overwrites); forward outputs are overwritten.
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

// qkv (B, T, C + 2*NKV*HS); out (B, T, C) overwritten; lse (B, NH, T) overwritten: the
// log-sum-exp of each query's scaled scores, kept for backward. NKV divides NH, NH divides C.
// doc_starts (B, T) or null, as above.
void attention_forward(float* out, float* lse, const float* qkv, int B, int T, int C, int NH,
                       int NKV, const int32_t* doc_starts = nullptr);

// Accumulates: dqkv (B, T, C + 2*NKV*HS) += d(loss)/d(qkv); a kv head's dk and dv sum its G query
// heads in a fixed order (bitwise the same for any thread count). out and lse are those of the
// forward.
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                        const float* lse, int B, int T, int C, int NH, int NKV,
                        const int32_t* doc_starts = nullptr);

// One decoding step with a KV cache: the attention of the new position `pos` of each of B
// sequences over positions 0..pos. qkv (B, C + 2*NKV*HS) holds that position's [q | k | v]; its k
// and v are written into row pos of k_cache and v_cache (B, max_T, NKV*HS), whose rows 0..pos-1
// hold the earlier positions' keys and values (rows after pos are never read). out (B, C) is
// overwritten with what attention_forward gives that position. No backward: decoding is
// inference only.
void attention_decode(float* out, float* k_cache, float* v_cache, const float* qkv, int B, int pos,
                      int max_T, int C, int NH, int NKV);

}  // namespace loom::kernels::cpu
