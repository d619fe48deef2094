// Token + position embedding on the CPU.
//
// The forward is a gather and is memory bound; rows are independent, so threads split rows. Token
// ids come from data files and user prompts, so they are checked before anything is read: a bad id
// must become an error that names it, not an out-of-bounds read. The backward is a scatter-add in
// which many positions may hit the same vocabulary row; to stay race-free and bit-for-bit
// independent of the thread count, threads split the embedding *columns* into fixed blocks and
// every block walks all positions in the same (b, t) order.
#include "kernels/cpu/embedding.h"

#include <algorithm>
#include <string>

#include "core/base/check.h"

namespace loom::kernels::cpu {
namespace {

// Columns per backward work unit: 256 bytes, a few cache lines, enough units for 2..16 threads at
// GPT-2 widths. Fixed so the work split never depends on the thread count.
constexpr int kColumnBlock = 64;

}  // namespace

void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                       int B, int T, int C, int V) {
  LOOM_CHECK(B > 0 && T > 0 && C > 0 && V > 0, "embedding sizes must be positive: B", B, "T", T,
             "C", C, "V", V);
  LOOM_CHECK(out != nullptr && tokens != nullptr && wte != nullptr && wpe != nullptr,
             "embedding_forward: out, tokens, wte and wpe must be non-null");
  // Checked serially first: an exception cannot leave an OpenMP region.
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      const int32_t id = tokens[static_cast<long>(b) * T + t];
      LOOM_CHECK(id >= 0 && id < V, "token id", id,
                 "at (b, t) = (" + std::to_string(b) + ", " + std::to_string(t) + ")",
                 "is outside the vocabulary [0, V) with V =", V);
    }
  }
  const long rows = static_cast<long>(B) * T;
#pragma omp parallel for schedule(static)
  for (long row = 0; row < rows; ++row) {
    const long t = row % T;
    float* out_row = out + row * C;                                         // (C)
    const float* token_row = wte + static_cast<long>(tokens[row]) * C;      // (C)
    const float* position_row = wpe + t * C;                                // (C)
    for (int c = 0; c < C; ++c) out_row[c] = token_row[c] + position_row[c];
  }
}

void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens,
                        int B, int T, int C) {
  LOOM_CHECK(B > 0 && T > 0 && C > 0, "embedding sizes must be positive: B", B, "T", T, "C", C);
  LOOM_CHECK(dwte != nullptr && dout != nullptr && tokens != nullptr,
             "embedding_backward: dwte, dout and tokens must be non-null");
  const int num_blocks = (C + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static)
  for (int block = 0; block < num_blocks; ++block) {
    const int c0 = block * kColumnBlock;
    const int c1 = std::min(C, c0 + kColumnBlock);
    for (int b = 0; b < B; ++b) {
      for (int t = 0; t < T; ++t) {
        const long row = static_cast<long>(b) * T + t;
        const float* d = dout + row * C;                                    // (C)
        float* g = dwte + static_cast<long>(tokens[row]) * C;               // (C)
        for (int c = c0; c < c1; ++c) g[c] += d[c];
        if (dwpe != nullptr) {
          float* gp = dwpe + static_cast<long>(t) * C;                      // (C)
          for (int c = c0; c < c1; ++c) gp[c] += d[c];
        }
      }
    }
  }
}

}  // namespace loom::kernels::cpu
