// Token and position embeddings, forward and backward (CPU reference path).
//
// The token table may be a vocabulary shard: a tensor-parallel rank holds rows
// [vocab_start, vocab_start + vocab_count) of wte and contributes only for the tokens it owns
// (zeros for the others), so the sum over the TP group is the embedding. With one rank,
// vocab_start = 0 and vocab_count = V. Token ids are validated by the caller against the whole
// vocabulary (a rank cannot tell a bad id from another rank's).
//
// Rows are tokens of a (B, T) batch flattened to N = B * T; a rank that holds a block of rows
// (sequence parallelism) passes the global index of its first row, from which each row's
// position (row % T) follows. With documents packed into rows, doc_starts (N), the rows' own
// slice of a (B, T) array, gives each row's document start within its sequence (see
// kernels/cpu/attention.h) and the position is row % T - doc_starts[n]: positions restart at
// every document. Null: one document per sequence.
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

// out (N, C) is overwritten: wte[token - vocab_start] for owned tokens, 0 otherwise.
// tokens (N); wte (vocab_count, C).
void token_embedding_forward(float* out, const int32_t* tokens, const float* wte, int N, int C,
                             int vocab_start, int vocab_count);

// Accumulates: dwte (vocab_count, C) += dout rows of the owned tokens. Deterministic: the
// result does not depend on the number of threads.
void token_embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int N, int C,
                              int vocab_start, int vocab_count);

// Accumulates: out (N, C) += wpe[(first_row + n) % T (- doc_starts[n])]. wpe (T, C).
void position_embedding_forward(float* out, const float* wpe, int N, int T, int C, int first_row,
                                const int32_t* doc_starts = nullptr);

// Accumulates: dwpe[(first_row + n) % T (- doc_starts[n])] += dout[n]. Deterministic.
void position_embedding_backward(float* dwpe, const float* dout, int N, int T, int C,
                                 int first_row, const int32_t* doc_starts = nullptr);

}  // namespace loom::kernels::cpu
