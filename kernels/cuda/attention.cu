// Causal flash attention on the GPU: forward and a deterministic two-kernel backward.
//
// Every kernel works on square tiles of R positions (R = 64 for HS 32 and 64, R = 32 for HS 128,
// to keep shared memory under 99 KiB) with R / 16 warps; warp w owns rows [16w, 16w + 16) of its
// tile of queries (forward, dQ) or keys (dK dV), so after a tile is staged in shared memory (one
// __syncthreads) a warp works alone with __syncwarp only. Products run on the tensor cores through
// WMMA 16x16x16 bf16 fragments with fp32 accumulators. WMMA's register layout is opaque, so
// anything done per row (mask, softmax, the running max and sum) goes through a warp's own fp32
// strip of shared memory: the scores are stored, each lane takes columns lane, lane + 32 of every
// row, and the probabilities are written back as bf16 for the next product. The forward keeps its
// output accumulator in shared memory too, where it is rescaled row by row as the running max
// grows; the backward accumulates dK, dV and dQ in fragments (no rescaling needed).
//
// Grouped-query attention: query head h reads kv head h / G (G = NH / NKV query heads per kv head)
// in place, so K and V are never repeated in memory. The dK dV kernel owns a key tile of one kv
// head and walks its G query heads in order, each over its query tiles, so the group's gradients
// meet in that block's fragments in a fixed order: still no atomics, and with NKV == NH the order
// of plain multi-head attention.
//
// Masking: key j of query i counts iff start(i) <= j <= i and j < T, start(i) = doc_starts[i] with
// documents packed into the sequences (0 without). Starts never decrease along a sequence, so the
// forward and the dQ kernel begin at the key tile of their first query's start and the dK dV
// kernel stops at the first query tile whose first query starts past its keys: the key tiles of
// earlier documents are never visited. A row may find no key of its document in a visited tile;
// the online softmax then keeps its running max at -inf and adds nothing.
//
// Positions past T in a partial tile are staged as zeros (never NaN garbage: a zero probability
// times garbage would still poison the product) and are never written. Probabilities and dS are
// rounded to bf16 before they meet V, dO, Q or K on the tensor cores; the running max and sum, the
// log-sum-exp and D stay fp32.
#include "kernels/cuda/attention.h"

#include <cuda_bf16.h>
#include <mma.h>

#include <cmath>
#include <cstdint>

#include "core/base/check.h"
#include "core/base/cuda/check.h"
#include "kernels/cuda/vector_io.cuh"

namespace loom::kernels::cuda {
namespace {

namespace wmma = nvcuda::wmma;
using nv_bf16 = __nv_bfloat16;

constexpr int kWarp = 32;
constexpr int kFrag = 16;  // WMMA tile edge

// Tile geometry of one head size. Padding keeps rows 16 bytes apart in bank terms (8 bf16 or 4
// floats), which WMMA needs (ldm a multiple of 16 bytes) and which staggers rows across banks.
template <int HS>
struct Tile {
  static constexpr int R = HS == 128 ? 32 : 64;  // positions per tile, queries and keys alike
  static constexpr int kWarps = R / kFrag;
  static constexpr int kThreads = kWarps * kWarp;
  static constexpr int kLdH = HS + 8;  // bf16 (R, HS) tiles: Q, K, V, dO
  static constexpr int kLdS = R + 4;   // fp32 (R, R) tiles: scores, dP
  static constexpr int kLdP = R + 8;   // bf16 (R, R) tiles: probabilities, dS
  static constexpr int kLdO = HS + 4;  // fp32 (R, HS) tile: forward output accumulator
  static constexpr int kCols = R / kWarp;  // score columns per lane
  static_assert(HS % kFrag == 0 && R % kWarp == 0, "tile shape");
};

// Shared-memory carving: each buffer starts 128-byte aligned (WMMA needs 32).
constexpr size_t aligned(size_t bytes) { return (bytes + 127) / 128 * 128; }
template <int HS>
constexpr size_t h_tile_bytes() {
  return aligned(sizeof(nv_bf16) * Tile<HS>::R * Tile<HS>::kLdH);
}
template <int HS>
constexpr size_t s_tile_bytes() {
  return aligned(sizeof(float) * Tile<HS>::R * Tile<HS>::kLdS);
}
template <int HS>
constexpr size_t p_tile_bytes() {
  return aligned(sizeof(nv_bf16) * Tile<HS>::R * Tile<HS>::kLdP);
}
template <int HS>
constexpr size_t o_tile_bytes() {
  return aligned(sizeof(float) * Tile<HS>::R * Tile<HS>::kLdO);
}
template <int HS>
constexpr size_t row_bytes() {
  return aligned(sizeof(float) * Tile<HS>::R);
}

// Forward: Q, K, V, scores, probabilities, output accumulator.
template <int HS>
constexpr size_t forward_smem_bytes() {
  return 3 * h_tile_bytes<HS>() + s_tile_bytes<HS>() + p_tile_bytes<HS>() + o_tile_bytes<HS>();
}
// Backward (both kernels): Q, dO, K, V, scores, dP, probabilities, dS, lse and D of the queries.
template <int HS>
constexpr size_t backward_smem_bytes() {
  return 4 * h_tile_bytes<HS>() + 2 * s_tile_bytes<HS>() + 2 * p_tile_bytes<HS>() +
         2 * row_bytes<HS>();
}
static_assert(forward_smem_bytes<64>() <= 99 * 1024 && forward_smem_bytes<32>() <= 99 * 1024 &&
              forward_smem_bytes<128>() <= 99 * 1024, "forward shared memory");
static_assert(backward_smem_bytes<64>() <= 99 * 1024 && backward_smem_bytes<32>() <= 99 * 1024 &&
              backward_smem_bytes<128>() <= 99 * 1024, "backward shared memory");

// Hands out consecutive aligned buffers of dynamic shared memory.
struct SmemCursor {
  unsigned char* next;
  template <typename T>
  __device__ T* take(size_t bytes) {
    T* p = reinterpret_cast<T*>(next);
    next += bytes;
    return p;
  }
};

// dst (R, kLdH) rows r = src rows row0 + r (each HS wide, `stride` elements apart), zero for rows
// at or past T. Whole block; 16-byte copies (HS is a multiple of 8 and the launcher checks that
// every row start is 16-byte aligned).
template <int HS>
__device__ void stage_rows(nv_bf16* dst, const nv_bf16* src, int64_t stride, int row0, int T) {
  constexpr int kChunks = HS / 8;  // 16-byte chunks per row
  for (int e = threadIdx.x; e < Tile<HS>::R * kChunks; e += blockDim.x) {
    const int r = e / kChunks;
    const int c = (e % kChunks) * 8;
    uint4 value = make_uint4(0, 0, 0, 0);
    if (row0 + r < T) {
      value = *reinterpret_cast<const uint4*>(src + static_cast<int64_t>(row0 + r) * stride + c);
    }
    *reinterpret_cast<uint4*>(dst + r * Tile<HS>::kLdH + c) = value;
  }
}

__device__ float warp_max(float v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

using FragA = wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFrag, nv_bf16, wmma::row_major>;
using FragB = wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, nv_bf16, wmma::row_major>;
using FragBt = wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, nv_bf16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, kFrag, kFrag, kFrag, float>;

// s (16, R; ld kLdS) = a (16, HS; ld kLdH) b^T, b (R, HS; ld kLdH): one warp's strip of scores.
template <int HS>
__device__ void warp_scores(float* s, const nv_bf16* a, const nv_bf16* b) {
  using G = Tile<HS>;
#pragma unroll
  for (int n = 0; n < G::R / kFrag; ++n) {
    FragC acc;
    wmma::fill_fragment(acc, 0.0f);
#pragma unroll
    for (int k = 0; k < HS / kFrag; ++k) {
      FragA fa;
      FragBt fb;  // column-major view of b's rows = b^T
      wmma::load_matrix_sync(fa, a + k * kFrag, G::kLdH);
      wmma::load_matrix_sync(fb, b + n * kFrag * G::kLdH + k * kFrag, G::kLdH);
      wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(s + n * kFrag, acc, G::kLdS, wmma::mem_row_major);
  }
}

// acc[d] += p (16, R; ld kLdP) x (R, HS; ld kLdH), column block d of the result in acc[d].
template <int HS>
__device__ void warp_accumulate(FragC (&acc)[HS / kFrag], const nv_bf16* p, const nv_bf16* x) {
  using G = Tile<HS>;
#pragma unroll
  for (int k = 0; k < G::R / kFrag; ++k) {
    FragA fa;
    wmma::load_matrix_sync(fa, p + k * kFrag, G::kLdP);
#pragma unroll
    for (int d = 0; d < HS / kFrag; ++d) {
      FragB fb;
      wmma::load_matrix_sync(fb, x + k * kFrag * G::kLdH + d * kFrag, G::kLdH);
      wmma::mma_sync(acc[d], fa, fb, acc[d]);
    }
  }
}

// Writes acc * scale (16 rows, HS columns) to dst row r = first_row + r (rows at or past T are
// skipped), `stride` elements between rows, via the warp's fp32 strip `scratch` (ld kLdS >= 16).
template <int HS>
__device__ void warp_write_rows(nv_bf16* dst, int64_t stride, int first_row, int T,
                                FragC (&acc)[HS / kFrag], float scale, float* scratch) {
  using G = Tile<HS>;
  const int lane = threadIdx.x % kWarp;
#pragma unroll
  for (int d = 0; d < HS / kFrag; ++d) {
    wmma::store_matrix_sync(scratch, acc[d], G::kLdS, wmma::mem_row_major);
    __syncwarp();
    for (int e = lane; e < kFrag * kFrag / 2; e += kWarp) {  // pairs of columns
      const int r = e / (kFrag / 2);
      const int c = (e % (kFrag / 2)) * 2;
      if (first_row + r < T) {
        const float* src = scratch + r * G::kLdS + c;
        *reinterpret_cast<__nv_bfloat162*>(dst + (first_row + r) * stride + d * kFrag + c) =
            __floats2bfloat162_rn(src[0] * scale, src[1] * scale);
      }
    }
    __syncwarp();
  }
}

// grid (query tiles, NH, B); heaviest (last) query tiles first.
template <int HS>
__global__ void __launch_bounds__(Tile<HS>::kThreads)
    attention_forward_kernel(nv_bf16* out, float* lse, const nv_bf16* qkv, int T, int C, int NH,
                             int NKV, float scale, const int32_t* doc_starts) {
  using G = Tile<HS>;
  constexpr int R = G::R;
  extern __shared__ __align__(128) unsigned char smem[];
  SmemCursor cursor{smem};
  nv_bf16* q_s = cursor.take<nv_bf16>(h_tile_bytes<HS>());  // (R, HS)
  nv_bf16* k_s = cursor.take<nv_bf16>(h_tile_bytes<HS>());  // (R, HS)
  nv_bf16* v_s = cursor.take<nv_bf16>(h_tile_bytes<HS>());  // (R, HS)
  float* s_s = cursor.take<float>(s_tile_bytes<HS>());      // (R, R) scores
  nv_bf16* p_s = cursor.take<nv_bf16>(p_tile_bytes<HS>());  // (R, R) probabilities
  float* o_s = cursor.take<float>(o_tile_bytes<HS>());      // (R, HS) unnormalised output

  const int n_tiles = (T + R - 1) / R;
  const int qt = n_tiles - 1 - static_cast<int>(blockIdx.x);
  const int h = static_cast<int>(blockIdx.y);
  const int b = static_cast<int>(blockIdx.z);
  const int warp = threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  const int64_t W = C + 2 * static_cast<int64_t>(NKV) * HS;  // a qkv row
  const int kv = h / (NH / NKV);
  const nv_bf16* rows = qkv + static_cast<int64_t>(b) * T * W;
  const nv_bf16* q_g = rows + h * HS;                                  // (T, HS), stride W
  const nv_bf16* k_g = rows + C + static_cast<int64_t>(kv) * HS;       // (T, HS), stride W
  const nv_bf16* v_g = k_g + static_cast<int64_t>(NKV) * HS;          // (T, HS), stride W
  const int32_t* starts = doc_starts ? doc_starts + static_cast<int64_t>(b) * T : nullptr;  // (T)
  const int q0 = qt * R;

  stage_rows<HS>(q_s, q_g, W, q0, T);
  for (int e = threadIdx.x; e < R * G::kLdO; e += blockDim.x) o_s[e] = 0.0f;

  // This warp's 16 rows; the running max and sum of each are held (identically) by every lane.
  float* s_w = s_s + warp * kFrag * G::kLdS;
  nv_bf16* p_w = p_s + warp * kFrag * G::kLdP;
  float* o_w = o_s + warp * kFrag * G::kLdO;
  float row_max[kFrag];
  float row_sum[kFrag];
  int row_start[kFrag];  // the first key of each row's document
#pragma unroll
  for (int r = 0; r < kFrag; ++r) {
    row_max[r] = -INFINITY;
    row_sum[r] = 0.0f;
    const int i = q0 + warp * kFrag + r;
    row_start[r] = starts && i < T ? starts[i] : 0;
  }

  for (int kt = starts ? starts[q0] / R : 0; kt <= qt; ++kt) {
    const int k0 = kt * R;
    __syncthreads();  // every warp is done with the previous K, V (and Q, O are staged)
    stage_rows<HS>(k_s, k_g, W, k0, T);
    stage_rows<HS>(v_s, v_g, W, k0, T);
    __syncthreads();

    warp_scores<HS>(s_w, q_s + warp * kFrag * G::kLdH, k_s);
    __syncwarp();

    // Online softmax. Without documents every row has a valid key in every tile it visits (key
    // k0 <= q0 <= i, and k0 < T), so the new max is finite; exp(-inf - max) = 0 for masked keys
    // and for the empty running sum of the first tile. A row whose document starts past the tile
    // has none: its max stays -inf (base 0) and its probabilities and running sum 0.
#pragma unroll
    for (int r = 0; r < kFrag; ++r) {
      const int i = q0 + warp * kFrag + r;
      float s[G::kCols];
      float tile_max = -INFINITY;
#pragma unroll
      for (int c = 0; c < G::kCols; ++c) {
        const int col = lane + c * kWarp;
        const int j = k0 + col;
        s[c] = (row_start[r] <= j && j <= i && j < T) ? s_w[r * G::kLdS + col] * scale : -INFINITY;
        tile_max = fmaxf(tile_max, s[c]);
      }
      const float new_max = fmaxf(row_max[r], warp_max(tile_max));
      const float base = new_max == -INFINITY ? 0.0f : new_max;
      const float rescale = __expf(row_max[r] - base);
      float tile_sum = 0.0f;
#pragma unroll
      for (int c = 0; c < G::kCols; ++c) {
        const float p = __expf(s[c] - base);
        tile_sum += p;
        p_w[r * G::kLdP + lane + c * kWarp] = __float2bfloat16_rn(p);
      }
      row_sum[r] = row_sum[r] * rescale + warp_sum(tile_sum);
      row_max[r] = new_max;
      for (int d = lane; d < HS; d += kWarp) o_w[r * G::kLdO + d] *= rescale;
    }
    __syncwarp();

    // O_w += P_w V, through the accumulator in shared memory.
    FragC acc[HS / kFrag];
#pragma unroll
    for (int d = 0; d < HS / kFrag; ++d) {
      wmma::load_matrix_sync(acc[d], o_w + d * kFrag, G::kLdO, wmma::mem_row_major);
    }
    warp_accumulate<HS>(acc, p_w, v_s);
#pragma unroll
    for (int d = 0; d < HS / kFrag; ++d) {
      wmma::store_matrix_sync(o_w + d * kFrag, acc[d], G::kLdO, wmma::mem_row_major);
    }
  }
  __syncwarp();

  float* lse_bh = lse + (static_cast<int64_t>(b) * NH + h) * T;  // (T)
#pragma unroll
  for (int r = 0; r < kFrag; ++r) {
    const int i = q0 + warp * kFrag + r;
    if (i >= T) continue;  // warp-uniform
    const float inv = 1.0f / row_sum[r];
    nv_bf16* out_row = out + (static_cast<int64_t>(b) * T + i) * C + h * HS;
    for (int d = 2 * lane; d < HS; d += 2 * kWarp) {
      *reinterpret_cast<__nv_bfloat162*>(out_row + d) =
          __floats2bfloat162_rn(o_w[r * G::kLdO + d] * inv, o_w[r * G::kLdO + d + 1] * inv);
    }
    if (lane == 0) lse_bh[i] = row_max[r] + logf(row_sum[r]);
  }
}

// D (B, NH, T) = per (position, head) dot(dout, out) in fp32; one warp per (b, t, h).
constexpr int kDotWarps = 8;
__global__ void __launch_bounds__(kDotWarps * kWarp)
    attention_row_dot_kernel(float* D, const nv_bf16* dout, const nv_bf16* out, int B, int T,
                             int C, int NH) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kDotWarps + threadIdx.x / kWarp;
  if (row >= static_cast<int64_t>(B) * T * NH) return;  // whole warps; no barrier follows
  const int lane = threadIdx.x % kWarp;
  const int HS = C / NH;
  const int h = static_cast<int>(row % NH);
  const int64_t bt = row / NH;  // b * T + t
  const int64_t offset = bt * C + static_cast<int64_t>(h) * HS;
  float sum = 0.0f;
  for (int d = 2 * lane; d < HS; d += 2 * kWarp) {
    const float2 g = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(dout + offset + d));
    const float2 o = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(out + offset + d));
    sum += g.x * o.x + g.y * o.y;
  }
  sum = warp_sum(sum);
  if (lane == 0) {
    const int64_t b = bt / T;
    const int64_t t = bt % T;
    D[(b * NH + h) * T + t] = sum;
  }
}

// Everything the two backward kernels share: staged tiles and the per-warp strips.
template <int HS>
struct BackwardSmem {
  nv_bf16* q;     // (R, HS)
  nv_bf16* dout;  // (R, HS)
  nv_bf16* k;     // (R, HS)
  nv_bf16* v;     // (R, HS)
  float* s;       // (R, R) scores
  float* dp;      // (R, R) dP
  nv_bf16* p;     // (R, R) probabilities
  nv_bf16* ds;    // (R, R) dS
  float* lse;     // (R) of the staged queries
  float* D;       // (R) of the staged queries

  __device__ explicit BackwardSmem(unsigned char* base) {
    SmemCursor cursor{base};
    q = cursor.take<nv_bf16>(h_tile_bytes<HS>());
    dout = cursor.take<nv_bf16>(h_tile_bytes<HS>());
    k = cursor.take<nv_bf16>(h_tile_bytes<HS>());
    v = cursor.take<nv_bf16>(h_tile_bytes<HS>());
    s = cursor.take<float>(s_tile_bytes<HS>());
    dp = cursor.take<float>(s_tile_bytes<HS>());
    p = cursor.take<nv_bf16>(p_tile_bytes<HS>());
    ds = cursor.take<nv_bf16>(p_tile_bytes<HS>());
    lse = cursor.take<float>(row_bytes<HS>());
    D = cursor.take<float>(row_bytes<HS>());
  }
};

// Where query head h of sequence b, and the kv head it reads, live in the global buffers.
struct HeadView {
  const nv_bf16* q;     // (T, HS), stride W
  const nv_bf16* k;     // (T, HS), stride W: kv head h / G
  const nv_bf16* v;     // (T, HS), stride W
  const nv_bf16* dout;  // (T, HS), stride C
  const float* lse;     // (T)
  const float* D;       // (T)
  nv_bf16* dq;          // (T, HS), stride W
  nv_bf16* dk;          // (T, HS), stride W
  nv_bf16* dv;          // (T, HS), stride W
  int64_t W;            // a qkv row: C + 2 * NKV * HS

  __device__ HeadView(nv_bf16* dqkv, const nv_bf16* dout_all, const nv_bf16* qkv,
                      const float* lse_all, const float* D_all, int T, int C, int NH, int NKV,
                      int HS, int b, int h) {
    W = C + 2 * static_cast<int64_t>(NKV) * HS;
    const int kv = h / (NH / NKV);
    const int64_t row0 = static_cast<int64_t>(b) * T * W;
    const int64_t q_col = static_cast<int64_t>(h) * HS;
    const int64_t k_col = C + static_cast<int64_t>(kv) * HS;
    const int64_t v_col = k_col + static_cast<int64_t>(NKV) * HS;
    q = qkv + row0 + q_col;
    k = qkv + row0 + k_col;
    v = qkv + row0 + v_col;
    dq = dqkv + row0 + q_col;
    dk = dqkv + row0 + k_col;
    dv = dqkv + row0 + v_col;
    dout = dout_all + static_cast<int64_t>(b) * T * C + q_col;
    lse = lse_all + (static_cast<int64_t>(b) * NH + h) * T;
    D = D_all + (static_cast<int64_t>(b) * NH + h) * T;
  }
};

// Stages queries q0.. (Q, dO, lse, D; zeros past T). Whole block.
template <int HS>
__device__ void stage_queries(const BackwardSmem<HS>& sm, const HeadView& g, int q0, int T,
                              int C) {
  stage_rows<HS>(sm.q, g.q, g.W, q0, T);
  stage_rows<HS>(sm.dout, g.dout, C, q0, T);
  for (int r = threadIdx.x; r < Tile<HS>::R; r += blockDim.x) {
    const bool valid = q0 + r < T;
    sm.lse[r] = valid ? g.lse[q0 + r] : 0.0f;
    sm.D[r] = valid ? g.D[q0 + r] : 0.0f;
  }
}

// grid (key tiles, NKV, B). Owns keys k0 = blockIdx.x * R .. of kv head blockIdx.y and walks, for
// each of its G query heads in order, the query tiles from the diagonal to the end; warp w
// accumulates dK, dV of keys k0 + 16w .. in fragments, working on transposed strips (its 16 keys x
// the tile's R queries).
template <int HS>
__global__ void __launch_bounds__(Tile<HS>::kThreads)
    attention_backward_key_kernel(nv_bf16* dqkv, const nv_bf16* dout, const nv_bf16* qkv,
                                  const float* lse, const float* D, int T, int C, int NH,
                                  int NKV, float scale, const int32_t* doc_starts) {
  using G = Tile<HS>;
  constexpr int R = G::R;
  extern __shared__ __align__(128) unsigned char smem[];
  const BackwardSmem<HS> sm(smem);
  const int b = static_cast<int>(blockIdx.z);
  const int group = NH / NKV;
  // The group's query heads; the first one's view holds this block's kv head (k, v, dk, dv).
  const int first_head = static_cast<int>(blockIdx.y) * group;
  const int end_head = first_head + group;
  const int n_tiles = (T + R - 1) / R;
  const int kt = static_cast<int>(blockIdx.x);
  const int k0 = kt * R;
  const int warp = threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  const int32_t* starts = doc_starts ? doc_starts + static_cast<int64_t>(b) * T : nullptr;  // (T)

  {
    const HeadView kv(dqkv, dout, qkv, lse, D, T, C, NH, NKV, HS, b, first_head);
    stage_rows<HS>(sm.k, kv.k, kv.W, k0, T);
    stage_rows<HS>(sm.v, kv.v, kv.W, k0, T);
  }

  float* st_w = sm.s + warp * kFrag * G::kLdS;   // S^T strip (16 keys, R queries)
  float* dpt_w = sm.dp + warp * kFrag * G::kLdS;  // dP^T strip
  nv_bf16* pt_w = sm.p + warp * kFrag * G::kLdP;
  nv_bf16* dst_w = sm.ds + warp * kFrag * G::kLdP;
  FragC dk[HS / kFrag];
  FragC dv[HS / kFrag];
#pragma unroll
  for (int d = 0; d < HS / kFrag; ++d) {
    wmma::fill_fragment(dk[d], 0.0f);
    wmma::fill_fragment(dv[d], 0.0f);
  }

  // The group's query heads in order, each over its query tiles from the diagonal to the end.
  for (int h = first_head; h < end_head; ++h) {
    const HeadView g(dqkv, dout, qkv, lse, D, T, C, NH, NKV, HS, b, h);
    for (int qt = kt; qt < n_tiles; ++qt) {
      const int q0 = qt * R;
      // This query tile's first query, and every later one, starts its document past these keys.
      if (starts && starts[q0] >= k0 + R) break;  // block-uniform
      __syncthreads();  // every warp is done with the previous queries (and K, V are staged)
      stage_queries<HS>(sm, g, q0, T, C);
      __syncthreads();

      warp_scores<HS>(st_w, sm.k + warp * kFrag * G::kLdH, sm.q);      // K_w Q^T
      warp_scores<HS>(dpt_w, sm.v + warp * kFrag * G::kLdH, sm.dout);  // V_w dO^T
      __syncwarp();
      int col_start[G::kCols];  // the first key of each of this lane's queries' documents
#pragma unroll
      for (int c = 0; c < G::kCols; ++c) {
        const int i = q0 + lane + c * kWarp;
        col_start[c] = starts && i < T ? starts[i] : 0;
      }
#pragma unroll 4
      for (int r = 0; r < kFrag; ++r) {
        const int j = k0 + warp * kFrag + r;
#pragma unroll
        for (int c = 0; c < G::kCols; ++c) {
          const int col = lane + c * kWarp;
          const int i = q0 + col;
          const bool valid = col_start[c] <= j && j <= i && i < T && j < T;
          const float p = valid ? __expf(st_w[r * G::kLdS + col] * scale - sm.lse[col]) : 0.0f;
          const float ds = p * (dpt_w[r * G::kLdS + col] - sm.D[col]);
          pt_w[r * G::kLdP + col] = __float2bfloat16_rn(p);
          dst_w[r * G::kLdP + col] = __float2bfloat16_rn(ds);
        }
      }
      __syncwarp();
      warp_accumulate<HS>(dv, pt_w, sm.dout);  // dV_w += P^T_w dO
      warp_accumulate<HS>(dk, dst_w, sm.q);    // dK_w += dS^T_w Q (scaled at the end)
    }
  }
  __syncwarp();  // the strips are reused as staging below
  // Rebuilt here rather than held across the loop, to leave registers to the dK and dV fragments
  // (128 of them at HS = 128).
  const HeadView kv(dqkv, dout, qkv, lse, D, T, C, NH, NKV, HS, b, first_head);
  const int first_key = k0 + warp * kFrag;
  warp_write_rows<HS>(kv.dk, kv.W, first_key, T, dk, scale, st_w);
  warp_write_rows<HS>(kv.dv, kv.W, first_key, T, dv, 1.0f, st_w);
}

// grid (query tiles, NH, B); heaviest (last) query tiles first. Owns queries q0 .. of head
// blockIdx.y and walks the key tiles (of its kv head) up to the diagonal; warp w accumulates dQ of
// queries q0 + 16w .. in fragments.
template <int HS>
__global__ void __launch_bounds__(Tile<HS>::kThreads)
    attention_backward_query_kernel(nv_bf16* dqkv, const nv_bf16* dout, const nv_bf16* qkv,
                                    const float* lse, const float* D, int T, int C, int NH,
                                    int NKV, float scale, const int32_t* doc_starts) {
  using G = Tile<HS>;
  constexpr int R = G::R;
  extern __shared__ __align__(128) unsigned char smem[];
  const BackwardSmem<HS> sm(smem);
  const HeadView g(dqkv, dout, qkv, lse, D, T, C, NH, NKV, HS, static_cast<int>(blockIdx.z),
                   static_cast<int>(blockIdx.y));
  const int n_tiles = (T + R - 1) / R;
  const int qt = n_tiles - 1 - static_cast<int>(blockIdx.x);
  const int q0 = qt * R;
  const int warp = threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;

  stage_queries<HS>(sm, g, q0, T, C);

  float* s_w = sm.s + warp * kFrag * G::kLdS;
  float* dp_w = sm.dp + warp * kFrag * G::kLdS;
  nv_bf16* ds_w = sm.ds + warp * kFrag * G::kLdP;
  FragC dq[HS / kFrag];
#pragma unroll
  for (int d = 0; d < HS / kFrag; ++d) wmma::fill_fragment(dq[d], 0.0f);
  const int32_t* starts =
      doc_starts ? doc_starts + static_cast<int64_t>(blockIdx.z) * T : nullptr;  // (T)

  for (int kt = starts ? starts[q0] / R : 0; kt <= qt; ++kt) {
    const int k0 = kt * R;
    __syncthreads();  // every warp is done with the previous K, V (and the queries are staged)
    stage_rows<HS>(sm.k, g.k, g.W, k0, T);
    stage_rows<HS>(sm.v, g.v, g.W, k0, T);
    __syncthreads();

    warp_scores<HS>(s_w, sm.q + warp * kFrag * G::kLdH, sm.k);      // Q_w K^T
    warp_scores<HS>(dp_w, sm.dout + warp * kFrag * G::kLdH, sm.v);  // dO_w V^T
    __syncwarp();
#pragma unroll 4
    for (int r = 0; r < kFrag; ++r) {
      const int row = warp * kFrag + r;
      const int i = q0 + row;
      const float row_lse = sm.lse[row];
      const float row_D = sm.D[row];
      const int row_start = starts && i < T ? starts[i] : 0;
#pragma unroll
      for (int c = 0; c < G::kCols; ++c) {
        const int col = lane + c * kWarp;
        const int j = k0 + col;
        const bool valid = row_start <= j && j <= i && i < T && j < T;
        const float p = valid ? __expf(s_w[r * G::kLdS + col] * scale - row_lse) : 0.0f;
        ds_w[r * G::kLdP + col] = __float2bfloat16_rn(p * (dp_w[r * G::kLdS + col] - row_D));
      }
    }
    __syncwarp();
    warp_accumulate<HS>(dq, ds_w, sm.k);  // dQ_w += dS_w K (scaled at the end)
  }
  __syncwarp();
  warp_write_rows<HS>(g.dq, g.W, q0 + warp * kFrag, T, dq, scale, s_w);
}

void check_shapes(const char* what, int B, int T, int C, int NH, int NKV) {
  LOOM_CHECK(B > 0 && T > 0 && C > 0 && NH > 0 && NKV > 0, what, "needs positive sizes, got B", B,
             "T", T, "C", C, "NH", NH, "NKV", NKV);
  LOOM_CHECK(C % NH == 0, what, "needs n_head", NH, "to divide n_embd", C);
  LOOM_CHECK(NH % NKV == 0, what, "needs n_kv_head", NKV, "to divide n_head", NH);
  const int HS = C / NH;
  LOOM_CHECK(HS == 32 || HS == 64 || HS == 128, what, "supports head sizes 32, 64 and 128, got",
             HS);
  LOOM_CHECK(B <= 65535 && NH <= 65535, what, "launches a (tiles, NH, B) grid: NH", NH, "and B",
             B, "must be at most 65535");
}

void check_aligned(const char* what, const void* p) {
  LOOM_CHECK(reinterpret_cast<uintptr_t>(p) % 16 == 0, what,
             "needs 16-byte aligned buffers (vector loads), got address", p);
}

template <typename Kernel>
void allow_smem(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024) {
    LOOM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(bytes)));
  }
}

template <int HS>
void launch_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH, int NKV,
                    const int32_t* doc_starts, cudaStream_t stream) {
  constexpr size_t smem = forward_smem_bytes<HS>();
  allow_smem(attention_forward_kernel<HS>, smem);
  const dim3 grid(ceil_div(T, Tile<HS>::R), NH, B);
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  attention_forward_kernel<HS><<<grid, Tile<HS>::kThreads, smem, stream>>>(
      reinterpret_cast<nv_bf16*>(out), lse, reinterpret_cast<const nv_bf16*>(qkv), T, C, NH,
      NKV, scale, doc_starts);
  LOOM_CUDA_CHECK_LAUNCH("attention_forward_kernel");
}

template <int HS>
void launch_backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse,
                     const float* D, int B, int T, int C, int NH, int NKV,
                     const int32_t* doc_starts, cudaStream_t stream) {
  constexpr size_t smem = backward_smem_bytes<HS>();
  allow_smem(attention_backward_key_kernel<HS>, smem);
  allow_smem(attention_backward_query_kernel<HS>, smem);
  const dim3 key_grid(ceil_div(T, Tile<HS>::R), NKV, B);
  const dim3 query_grid(ceil_div(T, Tile<HS>::R), NH, B);
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  auto* dqkv_d = reinterpret_cast<nv_bf16*>(dqkv);
  const auto* dout_d = reinterpret_cast<const nv_bf16*>(dout);
  const auto* qkv_d = reinterpret_cast<const nv_bf16*>(qkv);
  attention_backward_key_kernel<HS><<<key_grid, Tile<HS>::kThreads, smem, stream>>>(
      dqkv_d, dout_d, qkv_d, lse, D, T, C, NH, NKV, scale, doc_starts);
  LOOM_CUDA_CHECK_LAUNCH("attention_backward_key_kernel");
  attention_backward_query_kernel<HS><<<query_grid, Tile<HS>::kThreads, smem, stream>>>(
      dqkv_d, dout_d, qkv_d, lse, D, T, C, NH, NKV, scale, doc_starts);
  LOOM_CUDA_CHECK_LAUNCH("attention_backward_query_kernel");
}

}  // namespace

void attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH,
                       int NKV, cudaStream_t stream, const int32_t* doc_starts) {
  check_shapes("attention_forward", B, T, C, NH, NKV);
  check_aligned("attention_forward", qkv);
  check_aligned("attention_forward", out);
  switch (C / NH) {
    case 32: launch_forward<32>(out, lse, qkv, B, T, C, NH, NKV, doc_starts, stream); break;
    case 64: launch_forward<64>(out, lse, qkv, B, T, C, NH, NKV, doc_starts, stream); break;
    default: launch_forward<128>(out, lse, qkv, B, T, C, NH, NKV, doc_starts, stream); break;
  }
}

size_t attention_backward_scratch_floats(int B, int T, int NH) {
  return static_cast<size_t>(B) * static_cast<size_t>(NH) * static_cast<size_t>(T);
}

void attention_backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out,
                        const float* lse, int B, int T, int C, int NH, int NKV, float* scratch,
                        cudaStream_t stream, const int32_t* doc_starts) {
  check_shapes("attention_backward", B, T, C, NH, NKV);
  check_aligned("attention_backward", dqkv);
  check_aligned("attention_backward", dout);
  check_aligned("attention_backward", qkv);
  check_aligned("attention_backward", out);
  LOOM_CHECK(scratch != nullptr, "attention_backward needs a scratch of",
             attention_backward_scratch_floats(B, T, NH), "floats");

  const int64_t rows = static_cast<int64_t>(B) * T * NH;
  attention_row_dot_kernel<<<ceil_div(rows, kDotWarps), kDotWarps * kWarp, 0, stream>>>(
      scratch, reinterpret_cast<const nv_bf16*>(dout), reinterpret_cast<const nv_bf16*>(out), B,
      T, C, NH);
  LOOM_CUDA_CHECK_LAUNCH("attention_row_dot_kernel");
  switch (C / NH) {
    case 32:
      launch_backward<32>(dqkv, dout, qkv, lse, scratch, B, T, C, NH, NKV, doc_starts, stream);
      break;
    case 64:
      launch_backward<64>(dqkv, dout, qkv, lse, scratch, B, T, C, NH, NKV, doc_starts, stream);
      break;
    default:
      launch_backward<128>(dqkv, dout, qkv, lse, scratch, B, T, C, NH, NKV, doc_starts, stream);
      break;
  }
}

}  // namespace loom::kernels::cuda
