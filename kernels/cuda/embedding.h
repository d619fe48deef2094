// Token + position embedding, forward and backward, on the GPU (CPU twin: kernels/cpu/embedding.h).
//
// Backward convention (llm.c's): dwte and dwpe are parameter gradients and ACCUMULATE (+=).
// The forward of the token and position terms together overwrites out; the position term alone
// (position_embedding_forward) adds to out, as its CPU twin does.
//
// The forward writes out = wte[token] + wpe[position] in bf16. The backward is deterministic and
// uses no floating-point atomics: the (token, row) pairs are sorted by token (a stable radix sort,
// so rows keep their order), and each distinct token's rows are summed in that order in fp32 into
// its dwte row; dwpe sums each position's rows over the batch in order. The result is therefore
// the same bits on every run, and equal to the CPU twin's within fp32 summation order.
#pragma once

#include "kernels/cuda/common.h"

namespace loom::kernels::cuda {

// out (N, C) bf16 = wte[tokens[n] - vocab_start] + wpe[(first_row + n) % T] for owned tokens
// (vocab_start <= token < vocab_start + vocab_count), wpe alone otherwise (the other
// tensor-parallel ranks supply the token part); wpe null: no position term. tokens (N) i32;
// wte (vocab_count, C) bf16; wpe (T, C) bf16. Token ids are validated by the caller.
void embedding_forward(bf16* out, const int32_t* tokens, const bf16* wte, const bf16* wpe, int N,
                       int T, int C, int vocab_start, int vocab_count, int first_row,
                       cudaStream_t stream);

// Bytes of scratch embedding_backward needs for N rows (sort keys, values and cub's temporary).
size_t embedding_backward_scratch_bytes(int N);

// Accumulates in fp32: dwte (vocab_count, C) += dout rows of the owned tokens; dwpe (T, C) (may be
// null) += dout[n] at position (first_row + n) % T. dout (N, C) bf16. `scratch` holds
// embedding_backward_scratch_bytes(N) bytes of device memory.
void embedding_backward(float* dwte, float* dwpe, const bf16* dout, const int32_t* tokens, int N,
                        int T, int C, int vocab_start, int vocab_count, int first_row,
                        void* scratch, cudaStream_t stream);

// The position term alone. Accumulates: out (N, C) bf16 += wpe[(first_row + n) % T], the sum in
// fp32 rounded once; wpe (T, C) bf16. With documents packed into the sequences, doc_starts (N)
// i32 on the device (the rows of out) moves row n to position (first_row + n) % T - doc_starts[n]
// (kernels/cpu/embedding.h); null: one document per sequence. Twin:
// cpu::position_embedding_forward.
void position_embedding_forward(bf16* out, const bf16* wpe, int N, int T, int C, int first_row,
                                cudaStream_t stream, const int32_t* doc_starts = nullptr);

// Accumulates in fp32: dwpe (T, C) [(first_row + n) % T (- doc_starts[n])] += dout (N, C) bf16
// [n], each position's rows summed in row order (no atomics). Twin:
// cpu::position_embedding_backward.
void position_embedding_backward(float* dwpe, const bf16* dout, int N, int T, int C,
                                 int first_row, cudaStream_t stream,
                                 const int32_t* doc_starts = nullptr);

}  // namespace loom::kernels::cuda
