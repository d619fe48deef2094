// Token and position embeddings on the CPU.
//
// The forwards are gathers and memory bound; rows are independent, so threads split rows. The
// backwards are scatter-adds in which many rows may hit the same table row; to stay race-free
// and bit-for-bit independent of the thread count, threads split the embedding *columns* into
// fixed blocks and every block walks all rows in the same order.
#include "kernels/cpu/embedding.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/base/check.h"

namespace loom::kernels::cpu {
namespace {

// Columns per backward work unit: 256 bytes, a few cache lines, enough units for 2..16 threads at
// GPT-2 widths. Fixed so the work split never depends on the thread count.
constexpr int kColumnBlock = 64;

void check_sizes(const char* what, int N, int C) {
  LOOM_CHECK(N > 0 && C > 0, what, "sizes must be positive: N", N, "C", C);
}

// The wpe row of row n: its place in its sequence, from its document's start when packed.
int position(int n, int T, int first_row, const int32_t* doc_starts) {
  const int t = (first_row + n) % T;
  return doc_starts ? t - doc_starts[n] : t;
}

// position_embedding_backward with documents packed: the early positions collect a row of every
// document, so each position's rows are summed in row order first and added to dwpe once (as the
// GPU does), rounding dwpe's old value once rather than once per row. Starting from dwpe = 0 the
// sums are the same as the documents' rows added one by one.
void packed_position_backward(float* dwpe, const float* dout, int N, int T, int C, int first_row,
                              const int32_t* doc_starts, int num_blocks) {
#pragma omp parallel
  {
    std::vector<float> sums(static_cast<size_t>(T) * kColumnBlock);  // (T, block columns)
#pragma omp for schedule(static)
    for (int block = 0; block < num_blocks; ++block) {
      const int c0 = block * kColumnBlock;
      const int width = std::min(C, c0 + kColumnBlock) - c0;
      std::fill(sums.begin(), sums.end(), 0.0f);
      for (int n = 0; n < N; ++n) {
        const float* d = dout + static_cast<long>(n) * C + c0;                                  // (width)
        float* s = sums.data() + static_cast<long>(position(n, T, first_row, doc_starts)) * width;  // (width)
        for (int c = 0; c < width; ++c) s[c] += d[c];
      }
      for (int t = 0; t < T; ++t) {
        float* g = dwpe + static_cast<long>(t) * C + c0;
        const float* s = sums.data() + static_cast<long>(t) * width;
        for (int c = 0; c < width; ++c) g[c] += s[c];
      }
    }
  }
}

}  // namespace

void token_embedding_forward(float* out, const int32_t* tokens, const float* wte, int N, int C,
                             int vocab_start, int vocab_count) {
  check_sizes("token_embedding_forward", N, C);
  LOOM_CHECK(vocab_start >= 0 && vocab_count > 0, "token_embedding_forward: vocab_start",
             vocab_start, "vocab_count", vocab_count);
  LOOM_CHECK(out != nullptr && tokens != nullptr && wte != nullptr,
             "token_embedding_forward: out, tokens and wte must be non-null");
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    float* out_row = out + static_cast<long>(n) * C;  // (C)
    const int local = tokens[n] - vocab_start;
    if (local >= 0 && local < vocab_count) {
      std::memcpy(out_row, wte + static_cast<long>(local) * C, sizeof(float) * static_cast<size_t>(C));
    } else {
      std::memset(out_row, 0, sizeof(float) * static_cast<size_t>(C));
    }
  }
}

void token_embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int N, int C,
                              int vocab_start, int vocab_count) {
  check_sizes("token_embedding_backward", N, C);
  LOOM_CHECK(dwte != nullptr && dout != nullptr && tokens != nullptr,
             "token_embedding_backward: dwte, dout and tokens must be non-null");
  const int num_blocks = (C + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static)
  for (int block = 0; block < num_blocks; ++block) {
    const int c0 = block * kColumnBlock;
    const int c1 = std::min(C, c0 + kColumnBlock);
    for (int n = 0; n < N; ++n) {
      const int local = tokens[n] - vocab_start;
      if (local < 0 || local >= vocab_count) continue;
      const float* d = dout + static_cast<long>(n) * C;  // (C)
      float* g = dwte + static_cast<long>(local) * C;    // (C)
      for (int c = c0; c < c1; ++c) g[c] += d[c];
    }
  }
}

void position_embedding_forward(float* out, const float* wpe, int N, int T, int C, int first_row,
                                const int32_t* doc_starts) {
  check_sizes("position_embedding_forward", N, C);
  LOOM_CHECK(T > 0 && first_row >= 0, "position_embedding_forward: T", T, "first_row", first_row);
  LOOM_CHECK(out != nullptr && wpe != nullptr, "position_embedding_forward: out and wpe must be non-null");
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    float* out_row = out + static_cast<long>(n) * C;                           // (C)
    const float* p = wpe + static_cast<long>(position(n, T, first_row, doc_starts)) * C;  // (C)
    for (int c = 0; c < C; ++c) out_row[c] += p[c];
  }
}

void position_embedding_backward(float* dwpe, const float* dout, int N, int T, int C,
                                 int first_row, const int32_t* doc_starts) {
  check_sizes("position_embedding_backward", N, C);
  LOOM_CHECK(T > 0 && first_row >= 0, "position_embedding_backward: T", T, "first_row", first_row);
  LOOM_CHECK(dwpe != nullptr && dout != nullptr, "position_embedding_backward: dwpe and dout must be non-null");
  const int num_blocks = (C + kColumnBlock - 1) / kColumnBlock;
  if (doc_starts) {
    packed_position_backward(dwpe, dout, N, T, C, first_row, doc_starts, num_blocks);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int block = 0; block < num_blocks; ++block) {
    const int c0 = block * kColumnBlock;
    const int c1 = std::min(C, c0 + kColumnBlock);
    for (int n = 0; n < N; ++n) {
      const float* d = dout + static_cast<long>(n) * C;                        // (C)
      float* g = dwpe + static_cast<long>(position(n, T, first_row, doc_starts)) * C;  // (C)
      for (int c = c0; c < c1; ++c) g[c] += d[c];
    }
  }
}

}  // namespace loom::kernels::cpu
