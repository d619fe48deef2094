// Causal multi-head self-attention, tiled (CPU reference path).
//
// qkv holds, for each position, [q | k | v], each C wide; head h uses columns [h*HS, (h+1)*HS)
// of each part, HS = C / NH. Scores are scaled by 1/sqrt(HS). The whole T x T score matrix is
// never materialised for all heads at once: work is split into (batch, head, query tile) units,
// each of which holds at most one tile of scores, and the backward recomputes scores from the
// saved log-sum-exp (as flash attention does) instead of storing probabilities.
#pragma once

namespace loom::kernels::cpu {

// qkv (B, T, 3C); out (B, T, C) overwritten; lse (B, NH, T) overwritten: the log-sum-exp of
// each query's scaled scores, kept for backward.
void attention_forward(float* out, float* lse, const float* qkv, int B, int T, int C, int NH);

// Accumulates: dqkv (B, T, 3C) += d(loss)/d(qkv). out and lse are those of the forward.
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                        const float* lse, int B, int T, int C, int NH);

// One decoding step with a KV cache: the attention of the new position `pos` of each of B
// sequences over positions 0..pos. qkv (B, 3C) holds that position's [q | k | v]; its k and v are
// written into row pos of k_cache and v_cache (B, max_T, C), whose rows 0..pos-1 hold the earlier
// positions' keys and values (rows after pos are never read). out (B, C) is overwritten with what
// attention_forward gives that position. No backward: decoding is inference only.
void attention_decode(float* out, float* k_cache, float* v_cache, const float* qkv, int B, int pos,
                      int max_T, int C, int NH);

}  // namespace loom::kernels::cpu
