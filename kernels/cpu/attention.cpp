// Causal attention on the CPU, tiled like flash attention.
//
// A (batch, head, query tile) unit holds one tile of scores (at most kQueryTile x T floats, in a
// per-thread scratch allocated once per call), so memory stays O(T) per thread instead of
// O(B NH T^2). Every product is a small row-major GEMM done by one register-blocked helper whose
// inner loop runs along contiguous memory; keys and values are transposed once per unit so that
// holds for Q K^T and dO V^T too. No cblas here: called from inside our OpenMP units, OpenBLAS
// would open nested parallel regions, and the tiles are too small to gain from it.
//
// Grouped-query attention: NKV key/value heads, each shared by G = NH / NKV consecutive query
// heads, read in place (K and V are never repeated in memory). The backward parallelises over
// (batch, kv head) only: dK and dV of one kv head sum contributions from every query tile of each
// of its G query heads, and giving the whole group to one thread keeps that sum race-free and in
// a fixed order (query head, then query tile), so results are bitwise identical for any thread
// count; with NKV == NH it is the plain multi-head order. exp is fast_exp
// (kernels/cpu/fast_exp.h) because scalar expf would dominate the softmax.
#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/base/check.h"
#include "kernels/cpu/fast_exp.h"

namespace loom::kernels::cpu {
namespace {

constexpr int kQueryTile = 32;  // 32 beat 16, 64 and 128 at T=256, HS=64 (less masked work)


// c (M, N; row stride ldc) = (accumulate ? c : 0) + alpha * A B, where A(i, k) is
// a[i * a_row + k * a_col] and b (K, N) is row-major with row stride ldb. A is read one scalar
// at a time (broadcast), so any A layout is fast, including a transposed one.
void gemm(float* c, int ldc, const float* a, int a_row, int a_col, const float* b, int ldb,
          int M, int N, int K, float alpha, bool accumulate) {
  constexpr int MR = 4;
  constexpr int NR = 16;
  int i = 0;
  for (; i + MR <= M; i += MR) {
    int j = 0;
    for (; j + NR <= N; j += NR) {
      float acc[MR][NR] = {};
      for (int k = 0; k < K; ++k) {
        const float* b_row = b + k * ldb + j;
#pragma GCC unroll 4  // keeps acc in registers at -O2 as well as -O3
        for (int r = 0; r < MR; ++r) {
          const float a_ik = a[(i + r) * a_row + k * a_col];
#pragma omp simd
          for (int q = 0; q < NR; ++q) acc[r][q] += a_ik * b_row[q];
        }
      }
      for (int r = 0; r < MR; ++r) {
        float* c_row = c + (i + r) * ldc + j;
        for (int q = 0; q < NR; ++q) c_row[q] = (accumulate ? c_row[q] : 0.0f) + alpha * acc[r][q];
      }
    }
    if (j < N) {
      const int nr = N - j;
      float acc[MR][NR] = {};
      for (int k = 0; k < K; ++k) {
        const float* b_row = b + k * ldb + j;
        for (int r = 0; r < MR; ++r) {
          const float a_ik = a[(i + r) * a_row + k * a_col];
          for (int q = 0; q < nr; ++q) acc[r][q] += a_ik * b_row[q];
        }
      }
      for (int r = 0; r < MR; ++r) {
        float* c_row = c + (i + r) * ldc + j;
        for (int q = 0; q < nr; ++q) c_row[q] = (accumulate ? c_row[q] : 0.0f) + alpha * acc[r][q];
      }
    }
  }
  for (; i < M; ++i) {  // leftover rows, one at a time
    for (int j = 0; j < N; j += NR) {
      const int nr = std::min(NR, N - j);
      float acc[NR] = {};
      for (int k = 0; k < K; ++k) {
        const float* b_row = b + k * ldb + j;
        const float a_ik = a[i * a_row + k * a_col];
        for (int q = 0; q < nr; ++q) acc[q] += a_ik * b_row[q];
      }
      float* c_row = c + i * ldc + j;
      for (int q = 0; q < nr; ++q) c_row[q] = (accumulate ? c_row[q] : 0.0f) + alpha * acc[q];
    }
  }
}

// dst (HS, n) = src rows 0..n-1 (each HS wide, row stride ld) transposed.
void transpose_rows(float* dst, const float* src, int n, int HS, int ld) {
  for (int j = 0; j < n; ++j) {
    for (int d = 0; d < HS; ++d) dst[d * n + j] = src[j * ld + d];
  }
}

// Turns one row of scaled scores into probabilities over keys first..last (the others get 0) and
// returns the row's log-sum-exp.
float softmax_row(float* s, int first, int last, int n) {
  float max = s[first];
  for (int j = first + 1; j <= last; ++j) max = std::max(max, s[j]);
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int j = first; j <= last; ++j) {
    s[j] = fast_exp(s[j] - max);
    sum += s[j];
  }
  const float inv = 1.0f / sum;
#pragma omp simd
  for (int j = first; j <= last; ++j) s[j] *= inv;
  for (int j = 0; j < first; ++j) s[j] = 0.0f;
  for (int j = last + 1; j < n; ++j) s[j] = 0.0f;
  return max + std::log(sum);
}

void check_shapes(int B, int T, int C, int NH, int NKV) {
  LOOM_CHECK(B > 0 && T > 0 && C > 0 && NH > 0 && NKV > 0,
             "attention: sizes must be positive, got B", B, "T", T, "C", C, "NH", NH, "NKV", NKV);
  LOOM_CHECK(C % NH == 0, "attention: n_head", NH, "must divide n_embd", C);
  LOOM_CHECK(NH % NKV == 0, "attention: n_kv_head", NKV, "must divide n_head", NH);
}

// Where each head's columns lie in a qkv row [q: NH*HS | k: NKV*HS | v: NKV*HS]. Query head h
// reads kv head h / G (Hugging Face's repeat_kv order).
struct Heads {
  int HS;      // head size
  int G;       // query heads per kv head
  int k0, v0;  // where the k and v parts start
  int width;   // the whole qkv row
  Heads(int C, int NH, int NKV)
      : HS(C / NH), G(NH / NKV), k0(C), v0(C + NKV * HS), width(C + 2 * NKV * HS) {}
  int q(int h) const { return h * HS; }
  int k(int kv) const { return k0 + kv * HS; }
  int v(int kv) const { return v0 + kv * HS; }
};

}  // namespace

void attention_forward(float* out, float* lse, const float* qkv, int B, int T, int C, int NH,
                       int NKV, const int32_t* doc_starts) {
  check_shapes(B, T, C, NH, NKV);
  const Heads heads(C, NH, NKV);
  const int HS = heads.HS;
  const int W = heads.width;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const int n_tiles = (T + kQueryTile - 1) / kQueryTile;
  const int n_units = B * NH * n_tiles;
#pragma omp parallel
  {
    std::vector<float> q_tile(static_cast<size_t>(kQueryTile) * HS);  // (tile, HS), scaled
    std::vector<float> k_t(static_cast<size_t>(HS) * T);              // (HS, keys)
    std::vector<float> scores(static_cast<size_t>(kQueryTile) * T);   // (tile, keys)
#pragma omp for schedule(dynamic)
    for (int unit = 0; unit < n_units; ++unit) {
      // Heaviest (last) tiles first so the dynamic schedule ends balanced.
      const int tile = n_tiles - 1 - unit % n_tiles;
      const int h = (unit / n_tiles) % NH;
      const int b = unit / (n_tiles * NH);
      const int i0 = tile * kQueryTile;
      const int m = std::min(kQueryTile, T - i0);
      const int32_t* starts = doc_starts ? doc_starts + static_cast<size_t>(b) * T : nullptr;
      // Causal: this tile sees keys key0..i0+m-1, key0 the first key of its first row's document
      // (0 without documents; starts never decrease, so no row of the tile sees an earlier key).
      const int key0 = starts ? starts[i0] : 0;
      const int n_keys = i0 + m - key0;
      const float* rows = qkv + static_cast<size_t>(b) * T * W;  // (T, W)
      const float* q = rows + heads.q(h);                         // (T, HS), stride W
      const float* k = rows + heads.k(h / heads.G) + static_cast<size_t>(key0) * W;
      const float* v = rows + heads.v(h / heads.G) + static_cast<size_t>(key0) * W;
      for (int r = 0; r < m; ++r) {
        for (int d = 0; d < HS; ++d) q_tile[r * HS + d] = q[(i0 + r) * W + d] * scale;
      }
      transpose_rows(k_t.data(), k, n_keys, HS, W);
      gemm(scores.data(), n_keys, q_tile.data(), HS, 1, k_t.data(), n_keys, m, n_keys, HS, 1.0f,
           false);
      float* lse_bh = lse + (static_cast<size_t>(b) * NH + h) * T;  // (T)
      for (int r = 0; r < m; ++r) {
        const int first = starts ? starts[i0 + r] - key0 : 0;
        lse_bh[i0 + r] = softmax_row(scores.data() + r * n_keys, first, i0 + r - key0, n_keys);
      }
      float* o = out + (static_cast<size_t>(b) * T + i0) * C + h * HS;  // (m, HS), stride C
      gemm(o, C, scores.data(), n_keys, 1, v, W, m, HS, n_keys, 1.0f, false);
    }
  }
}

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                        const float* lse, int B, int T, int C, int NH, int NKV,
                        const int32_t* doc_starts) {
  check_shapes(B, T, C, NH, NKV);
  const Heads heads(C, NH, NKV);
  const int HS = heads.HS;
  const int W = heads.width;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const int n_units = B * NKV;
#pragma omp parallel
  {
    const size_t tile_keys = static_cast<size_t>(kQueryTile) * T;
    std::vector<float> q_tile(static_cast<size_t>(kQueryTile) * HS);  // (tile, HS), scaled
    std::vector<float> k_t(static_cast<size_t>(HS) * T);              // (HS, T)
    std::vector<float> v_t(static_cast<size_t>(HS) * T);              // (HS, T)
    std::vector<float> probs(tile_keys);                              // (tile, keys)
    std::vector<float> dscores(tile_keys);                            // (tile, keys)
    std::vector<float> dk(static_cast<size_t>(T) * HS);               // (T, HS)
    std::vector<float> dv(static_cast<size_t>(T) * HS);               // (T, HS)
#pragma omp for schedule(dynamic)
    for (int unit = 0; unit < n_units; ++unit) {
      const int kv = unit % NKV;
      const int b = unit / NKV;
      const size_t row0 = static_cast<size_t>(b) * T;
      const float* rows = qkv + row0 * W;  // (T, W)
      const float* k = rows + heads.k(kv);  // (T, HS), stride W
      const float* v = rows + heads.v(kv);
      const int32_t* starts = doc_starts ? doc_starts + row0 : nullptr;
      transpose_rows(k_t.data(), k, T, HS, W);
      transpose_rows(v_t.data(), v, T, HS, W);
      std::fill(dk.begin(), dk.end(), 0.0f);
      std::fill(dv.begin(), dv.end(), 0.0f);
      // The group's query heads in order, each over its query tiles in order: dK and dV sum the
      // group in one fixed order.
      for (int h = kv * heads.G; h < (kv + 1) * heads.G; ++h) {
        const float* q = rows + heads.q(h);             // (T, HS), stride W
        const float* o = out + row0 * C + h * HS;       // (T, HS), stride C
        const float* d_o = dout + row0 * C + h * HS;    // (T, HS), stride C
        const float* lse_bh = lse + (static_cast<size_t>(b) * NH + h) * T;  // (T)
        float* dq = dqkv + row0 * W + heads.q(h);       // (T, HS), stride W
        for (int i0 = 0; i0 < T; i0 += kQueryTile) {
          const int m = std::min(kQueryTile, T - i0);
          const int key0 = starts ? starts[i0] : 0;  // as in the forward: the tile's first key
          const int n_keys = i0 + m - key0;
          for (int r = 0; r < m; ++r) {
            for (int d = 0; d < HS; ++d) q_tile[r * HS + d] = q[(i0 + r) * W + d] * scale;
          }
          // Transposed keys have row stride T here (all T keys), of which we use n_keys columns.
          gemm(probs.data(), n_keys, q_tile.data(), HS, 1, k_t.data() + key0, T, m, n_keys, HS,
               1.0f, false);
          gemm(dscores.data(), n_keys, d_o + i0 * C, C, 1, v_t.data() + key0, T, m, n_keys, HS,
               1.0f, false);
          for (int r = 0; r < m; ++r) {
            const int i = i0 + r;
            const int first = starts ? starts[i] - key0 : 0;
            const int last = i - key0;
            float* p = probs.data() + r * n_keys;
            float* ds = dscores.data() + r * n_keys;
            const float row_lse = lse_bh[i];
            float dot = 0.0f;  // D_i = dO_i . O_i
#pragma omp simd reduction(+ : dot)
            for (int d = 0; d < HS; ++d) dot += d_o[i * C + d] * o[i * C + d];
#pragma omp simd
            for (int j = first; j <= last; ++j) {
              p[j] = fast_exp(p[j] - row_lse);
              ds[j] = p[j] * (ds[j] - dot);
            }
            for (int j = 0; j < first; ++j) {
              p[j] = 0.0f;
              ds[j] = 0.0f;
            }
            for (int j = last + 1; j < n_keys; ++j) {
              p[j] = 0.0f;
              ds[j] = 0.0f;
            }
          }
          // dQ = dS K scale goes straight into dqkv: each query row belongs to this unit alone.
          gemm(dq + i0 * W, W, dscores.data(), n_keys, 1, k + static_cast<size_t>(key0) * W, W, m,
               HS, n_keys, scale, true);
          // dK += dS^T (Q scale) and dV += P^T dO, summed over query tiles in order.
          gemm(dk.data() + static_cast<size_t>(key0) * HS, HS, dscores.data(), 1, n_keys,
               q_tile.data(), HS, n_keys, HS, m, 1.0f, true);
          gemm(dv.data() + static_cast<size_t>(key0) * HS, HS, probs.data(), 1, n_keys,
               d_o + i0 * C, C, n_keys, HS, m, 1.0f, true);
        }
      }
      float* d_rows = dqkv + row0 * W;
      for (int j = 0; j < T; ++j) {
        float* dk_row = d_rows + j * W + heads.k(kv);
        float* dv_row = d_rows + j * W + heads.v(kv);
        for (int d = 0; d < HS; ++d) {
          dk_row[d] += dk[j * HS + d];
          dv_row[d] += dv[j * HS + d];
        }
      }
    }
  }
}

void attention_decode(float* out, float* k_cache, float* v_cache, const float* qkv, int B, int pos,
                      int max_T, int C, int NH, int NKV) {
  check_shapes(B, max_T, C, NH, NKV);
  LOOM_CHECK(pos >= 0 && pos < max_T, "attention_decode: position", pos, "outside the cache of",
             max_T, "positions");
  const Heads heads(C, NH, NKV);
  const int HS = heads.HS;
  const int W = heads.width;
  const int KV = NKV * HS;  // a cache row
  const int n_keys = pos + 1;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  for (int b = 0; b < B; ++b) {
    const float* row = qkv + static_cast<size_t>(b) * W;
    const size_t at = (static_cast<size_t>(b) * max_T + pos) * KV;
    std::copy(row + heads.k(0), row + heads.k(0) + KV, k_cache + at);
    std::copy(row + heads.v(0), row + heads.v(0) + KV, v_cache + at);
  }
  // One unit per (sequence, kv head): its keys are transposed once for the group's query heads.
  const int n_units = B * NKV;
#pragma omp parallel
  {
    std::vector<float> q_row(HS);                                  // (1, HS), scaled
    std::vector<float> k_t(static_cast<size_t>(HS) * n_keys);     // (HS, keys)
    std::vector<float> scores(n_keys);                             // (1, keys)
#pragma omp for schedule(static)
    for (int unit = 0; unit < n_units; ++unit) {
      const int kv = unit % NKV;
      const int b = unit / NKV;
      const size_t cache0 = static_cast<size_t>(b) * max_T * KV + kv * HS;
      transpose_rows(k_t.data(), k_cache + cache0, n_keys, HS, KV);
      for (int h = kv * heads.G; h < (kv + 1) * heads.G; ++h) {
        const float* q = qkv + static_cast<size_t>(b) * W + heads.q(h);
        for (int d = 0; d < HS; ++d) q_row[d] = q[d] * scale;
        gemm(scores.data(), n_keys, q_row.data(), HS, 1, k_t.data(), n_keys, 1, n_keys, HS, 1.0f,
             false);
        softmax_row(scores.data(), 0, pos, n_keys);
        gemm(out + static_cast<size_t>(b) * C + h * HS, C, scores.data(), n_keys, 1,
             v_cache + cache0, KV, 1, HS, n_keys, 1.0f, false);
      }
    }
  }
}

}  // namespace loom::kernels::cpu
