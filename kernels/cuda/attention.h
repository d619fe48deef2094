// Causal self-attention with grouped-query heads, flash-style, on the GPU (CPU twin:
// kernels/cpu/attention.h, same layouts).
//
// No T x T matrix exists in memory: the forward walks key tiles with an online softmax (running
// max and sum per query row in fp32) and saves only the output and each row's log-sum-exp. The
// backward recomputes the probabilities tile by tile from the saved log-sum-exp; it runs as two
// kernels, one that owns a key tile and accumulates dK, dV over the query tiles, one that owns a
// query tile and accumulates dQ over the key tiles, so that every gradient element is summed by
// one thread block in a fixed order: no atomics, bitwise reproducible. With grouped-query heads
// (NKV < NH), the dK dV block of a kv head sums its G = NH / NKV query heads in order; K and V are
// never repeated in memory. Q·K^T and P·V run on the tensor cores (bf16 in, fp32 accumulate).
//
// Backward convention (llm.c's): dqkv is an activation gradient and is OVERWRITTEN; the forward
// overwrites out and lse. The Backend's convention, unadapted. Its limits (head sizes, grid, 16-byte
// alignment) are stated to users by the CUDA backend's unsupported(), asked before a run starts.
#pragma once

#include "kernels/cuda/common.h"

namespace loom::kernels::cuda {

// qkv (B, T, C + 2*NKV*HS) bf16: per position [q: NH*HS | k: NKV*HS | v: NKV*HS], HS = C / NH;
// query head h uses q columns [h*HS, (h+1)*HS) and reads kv head h / (NH / NKV) (NKV divides NH).
// out (B, T, C) bf16 overwritten; lse (B, NH, T) fp32 overwritten (natural log of each query's
// sum of exp(scaled scores)). Scores are scaled by 1/sqrt(HS). Supports HS in {32, 64, 128}.
// bf16 buffers must be 16-byte aligned (tiles are staged with 16-byte loads and stores).
// doc_starts (B, T) i32 on the device, or null: documents packed into the sequences, query i
// seeing keys doc_starts[i] .. i only (kernels/cpu/attention.h has the contract).
void attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH,
                       int NKV, cudaStream_t stream, const int32_t* doc_starts = nullptr);

// Floats of scratch attention_backward needs (the per-row dot(dout, out), B * NH * T).
size_t attention_backward_scratch_floats(int B, int T, int NH);

// dqkv (B, T, C + 2*NKV*HS) bf16 is overwritten with d(loss)/d(qkv): a kv head's dk and dv sum
// its query heads'. dout (B, T, C); out and lse those of the forward.
void attention_backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out,
                        const float* lse, int B, int T, int C, int NH, int NKV, float* scratch,
                        cudaStream_t stream, const int32_t* doc_starts = nullptr);

}  // namespace loom::kernels::cuda
