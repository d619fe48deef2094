// Token + position embedding on the GPU: a gather forward and a deterministic backward.
//
// Forward: one thread per 8 columns of a row (16-byte loads and stores) when C is a multiple of 8
// and the tables are 16-byte aligned, else one per element; wte and wpe rows are added in fp32
// and rounded once, as the CPU twin's fp32 sum of the same bf16 values. The position term alone
// (position_embedding_forward) adds wpe rows to out the same way.
//
// Backward (no floating-point atomics, the same bits on every run):
//  1. keys[n] = tokens[n] - vocab_start for owned tokens, vocab_count (a sentinel sorted last)
//     otherwise; rows[n] = n.
//  2. cub::DeviceRadixSort::SortPairs (stable) sorts (key, row) by key over the bits vocab_count
//     needs, so each token's rows form a run in increasing row order.
//  3. grid (N sorted positions, column tiles of 256): the block at the first position of a run
//     sums the run's dout rows in order in fp32 and adds the sum to the token's dwte row; blocks
//     at other positions return at once. A very frequent token makes one long serial run; its
//     row loads are independent, so they pipeline, and a run of thousands of rows costs tens of
//     microseconds.
//  4. dwpe: one thread per (t, c) loops over the rows at position t, n = n0, n0 + T, ..., in order.
#include "kernels/cuda/embedding.h"

#include <cuda_bf16.h>

#include <cub/device/device_radix_sort.cuh>

#include "core/base/check.h"
#include "core/base/cuda/check.h"
#include "kernels/cuda/vector_io.cuh"

namespace loom::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr size_t kAlignment = 256;  // each scratch array starts on a 256-byte boundary

size_t aligned_size(size_t bytes) { return (bytes + kAlignment - 1) / kAlignment * kAlignment; }

// Scratch: keys_in, keys_out (N) u32; rows_in, rows_out (N) i32; cub's temporary storage.
struct Scratch {
  uint32_t* keys_in;
  uint32_t* keys_out;
  int32_t* rows_in;
  int32_t* rows_out;
  void* sort_temp;
  size_t sort_temp_bytes;  // reserved for cub
};

// cub's temporary storage for N pairs sorted over bits [0, end_bit).
size_t sort_temp_bytes(int N, int end_bit) {
  size_t bytes = 0;
  LOOM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, bytes, static_cast<const uint32_t*>(nullptr), static_cast<uint32_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), N, 0, end_bit));
  return bytes;
}

Scratch scratch_layout(void* scratch, int N) {
  const size_t array_bytes = aligned_size(sizeof(uint32_t) * static_cast<size_t>(N));
  auto* base = static_cast<char*>(scratch);
  // The reservation is cub's answer for all 32 key bits; the sort of fewer bits is checked
  // against it before it runs.
  return Scratch{reinterpret_cast<uint32_t*>(base), reinterpret_cast<uint32_t*>(base + array_bytes),
                 reinterpret_cast<int32_t*>(base + 2 * array_bytes),
                 reinterpret_cast<int32_t*>(base + 3 * array_bytes), base + 4 * array_bytes,
                 sort_temp_bytes(N, 32)};
}

template <int kWidth>
__global__ void embedding_forward_kernel(__nv_bfloat16* __restrict__ out,
                                         const int32_t* __restrict__ tokens,
                                         const __nv_bfloat16* __restrict__ wte,
                                         const __nv_bfloat16* __restrict__ wpe, int N, int T,
                                         int C, int vocab_start, int vocab_count, int first_row) {
  const int64_t vector = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int vectors_per_row = C / kWidth;
  if (vector >= static_cast<int64_t>(N) * vectors_per_row) return;
  const int n = static_cast<int>(vector / vectors_per_row);
  const int c = static_cast<int>(vector % vectors_per_row) * kWidth;
  const int local = tokens[n] - vocab_start;
  const bool owned = local >= 0 && local < vocab_count;
  const int t = static_cast<int>((static_cast<int64_t>(first_row) + n) % T);

  float sum[kWidth];
  float row[kWidth];
#pragma unroll
  for (int k = 0; k < kWidth; ++k) sum[k] = 0.0f;
  if (owned) {
    load<kWidth>(row, wte + static_cast<int64_t>(local) * C + c);
#pragma unroll
    for (int k = 0; k < kWidth; ++k) sum[k] += row[k];
  }
  if (wpe != nullptr) {
    load<kWidth>(row, wpe + static_cast<int64_t>(t) * C + c);
#pragma unroll
    for (int k = 0; k < kWidth; ++k) sum[k] += row[k];
  }
  store<kWidth>(out + static_cast<int64_t>(n) * C + c, sum);
}

// out[n] += wpe[(first_row + n) % T], the position term alone (the token term is already in out:
// a stage that embeds tokens and positions in two steps, as the CPU twin does).
template <int kWidth>
__global__ void position_embedding_forward_kernel(__nv_bfloat16* __restrict__ out,
                                                  const __nv_bfloat16* __restrict__ wpe, int N,
                                                  int T, int C, int first_row,
                                                  const int32_t* __restrict__ doc_starts) {
  const int64_t vector = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int vectors_per_row = C / kWidth;
  if (vector >= static_cast<int64_t>(N) * vectors_per_row) return;
  const int n = static_cast<int>(vector / vectors_per_row);
  const int c = static_cast<int>(vector % vectors_per_row) * kWidth;
  const int t = static_cast<int>((static_cast<int64_t>(first_row) + n) % T) -
                (doc_starts ? doc_starts[n] : 0);  // from the document's start
  float sum[kWidth];
  float row[kWidth];
  load<kWidth>(sum, out + static_cast<int64_t>(n) * C + c);
  load<kWidth>(row, wpe + static_cast<int64_t>(t) * C + c);
#pragma unroll
  for (int k = 0; k < kWidth; ++k) sum[k] += row[k];
  store<kWidth>(out + static_cast<int64_t>(n) * C + c, sum);
}

__global__ void sort_keys_kernel(uint32_t* __restrict__ keys, int32_t* __restrict__ rows,
                                 const int32_t* __restrict__ tokens, int N, int vocab_start,
                                 int vocab_count) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const int local = tokens[n] - vocab_start;
  const bool owned = local >= 0 && local < vocab_count;
  keys[n] = static_cast<uint32_t>(owned ? local : vocab_count);
  rows[n] = n;
}

// grid (N, ceil(C / 256)), block 256. Only the block at a run's first sorted position works; the
// condition depends on blockIdx alone, so whole blocks return together.
__global__ void token_backward_kernel(float* __restrict__ dwte,
                                      const __nv_bfloat16* __restrict__ dout,
                                      const uint32_t* __restrict__ keys,
                                      const int32_t* __restrict__ rows, int N, int C,
                                      int vocab_count) {
  const int begin = blockIdx.x;
  const uint32_t key = keys[begin];
  if (key >= static_cast<uint32_t>(vocab_count)) return;  // not owned (sentinel)
  if (begin > 0 && keys[begin - 1] == key) return;        // not the run's first position
  int end = begin + 1;
  while (end < N && keys[end] == key) ++end;
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float sum = 0.0f;
#pragma unroll 4
  for (int j = begin; j < end; ++j) {
    sum += __bfloat162float(dout[static_cast<int64_t>(rows[j]) * C + c]);
  }
  dwte[static_cast<int64_t>(key) * C + c] += sum;
}

// One thread per (t, c) of dwpe (T, C): rows n = n0, n0 + T, ... with (first_row + n) % T == t.
__global__ void position_backward_kernel(float* __restrict__ dwpe,
                                         const __nv_bfloat16* __restrict__ dout, int N, int T,
                                         int C, int first_row) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(T) * C) return;
  const int t = static_cast<int>(i / C);
  const int c = static_cast<int>(i % C);
  const int n0 = (t - first_row % T + T) % T;
  if (n0 >= N) return;  // no row at this position: dwpe stays as it is
  float sum = 0.0f;
  for (int n = n0; n < N; n += T) sum += __bfloat162float(dout[static_cast<int64_t>(n) * C + c]);
  dwpe[i] += sum;
}

// The same with documents packed into the sequences: row n is at position (first_row + n) % T -
// doc_starts[n]. A document holds position t at most once, t rows after its start, so the walk
// jumps: from a row at position p < t, the next row that can be at t is t - p rows on (positions
// grow by one a row within a document and restart lower at the next); from p > t it steps a row.
// Rows are still summed in row order.
__global__ void packed_position_backward_kernel(float* __restrict__ dwpe,
                                                const __nv_bfloat16* __restrict__ dout,
                                                const int32_t* __restrict__ doc_starts, int N,
                                                int T, int C, int first_row) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(T) * C) return;
  const int t = static_cast<int>(i / C);
  const int c = static_cast<int>(i % C);
  float sum = 0.0f;
  int n = 0;
  while (n < N) {
    const int p = static_cast<int>((static_cast<int64_t>(first_row) + n) % T) - doc_starts[n];
    if (p == t) sum += __bfloat162float(dout[static_cast<int64_t>(n) * C + c]);
    n += p < t ? t - p : 1;
  }
  dwpe[i] += sum;
}

}  // namespace

void embedding_forward(bf16* out, const int32_t* tokens, const bf16* wte, const bf16* wpe, int N,
                       int T, int C, int vocab_start, int vocab_count, int first_row,
                       cudaStream_t stream) {
  LOOM_CHECK(N > 0 && T > 0 && C > 0, "embedding_forward sizes must be positive: N", N, "T", T,
             "C", C);
  LOOM_CHECK(vocab_start >= 0 && vocab_count > 0 && first_row >= 0,
             "embedding_forward: vocab_start", vocab_start, "vocab_count", vocab_count,
             "first_row", first_row);
  LOOM_CHECK(out != nullptr && tokens != nullptr && wte != nullptr,
             "embedding_forward: out, tokens and wte must be non-null");
  const auto aligned16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const bool vectorised = C % 8 == 0 && aligned16(out) && aligned16(wte) && aligned16(wpe);
  auto* out_ = reinterpret_cast<__nv_bfloat16*>(out);
  const auto* wte_ = reinterpret_cast<const __nv_bfloat16*>(wte);
  const auto* wpe_ = reinterpret_cast<const __nv_bfloat16*>(wpe);
  if (vectorised) {
    embedding_forward_kernel<8><<<ceil_div(static_cast<int64_t>(N) * (C / 8), kThreads), kThreads,
                                  0, stream>>>(out_, tokens, wte_, wpe_, N, T, C, vocab_start,
                                               vocab_count, first_row);
  } else {
    embedding_forward_kernel<1><<<ceil_div(static_cast<int64_t>(N) * C, kThreads), kThreads, 0,
                                  stream>>>(out_, tokens, wte_, wpe_, N, T, C, vocab_start,
                                            vocab_count, first_row);
  }
  LOOM_CUDA_CHECK_LAUNCH("embedding_forward_kernel");
}

size_t embedding_backward_scratch_bytes(int N) {
  LOOM_CHECK(N > 0, "embedding_backward_scratch_bytes: N must be positive, got", N);
  return 4 * aligned_size(sizeof(uint32_t) * static_cast<size_t>(N)) +
         aligned_size(sort_temp_bytes(N, 32));
}

void embedding_backward(float* dwte, float* dwpe, const bf16* dout, const int32_t* tokens, int N,
                        int T, int C, int vocab_start, int vocab_count, int first_row,
                        void* scratch, cudaStream_t stream) {
  LOOM_CHECK(N > 0 && T > 0 && C > 0, "embedding_backward sizes must be positive: N", N, "T", T,
             "C", C);
  LOOM_CHECK(vocab_start >= 0 && vocab_count > 0 && first_row >= 0,
             "embedding_backward: vocab_start", vocab_start, "vocab_count", vocab_count,
             "first_row", first_row);
  LOOM_CHECK(dwte != nullptr && dout != nullptr && tokens != nullptr && scratch != nullptr,
             "embedding_backward: dwte, dout, tokens and scratch must be non-null");
  LOOM_CHECK(reinterpret_cast<uintptr_t>(scratch) % kAlignment == 0,
             "embedding_backward: scratch must be 256-byte aligned");
  const auto* dout_ = reinterpret_cast<const __nv_bfloat16*>(dout);
  const Scratch s = scratch_layout(scratch, N);

  sort_keys_kernel<<<ceil_div(N, kThreads), kThreads, 0, stream>>>(s.keys_in, s.rows_in, tokens,
                                                                   N, vocab_start, vocab_count);
  LOOM_CUDA_CHECK_LAUNCH("sort_keys_kernel");
  // Keys are at most vocab_count (the sentinel): sort only the bits that can differ.
  int end_bit = 1;
  while (end_bit < 32 && (static_cast<uint32_t>(vocab_count) >> end_bit) != 0) ++end_bit;
  size_t temp_bytes = sort_temp_bytes(N, end_bit);
  LOOM_CHECK(temp_bytes <= s.sort_temp_bytes, "embedding_backward: the sort needs", temp_bytes,
             "bytes of temporary storage, more than the", s.sort_temp_bytes, "reserved");
  LOOM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(s.sort_temp, temp_bytes, s.keys_in, s.keys_out,
                                                  s.rows_in, s.rows_out, N, 0, end_bit, stream));

  const dim3 token_grid(static_cast<unsigned>(N), static_cast<unsigned>(ceil_div(C, kThreads)));
  token_backward_kernel<<<token_grid, kThreads, 0, stream>>>(dwte, dout_, s.keys_out, s.rows_out,
                                                             N, C, vocab_count);
  LOOM_CUDA_CHECK_LAUNCH("token_backward_kernel");

  if (dwpe != nullptr) position_embedding_backward(dwpe, dout, N, T, C, first_row, stream, nullptr);
}

void position_embedding_forward(bf16* out, const bf16* wpe, int N, int T, int C, int first_row,
                                cudaStream_t stream, const int32_t* doc_starts) {
  LOOM_CHECK(N > 0 && T > 0 && C > 0 && first_row >= 0,
             "position_embedding_forward: N", N, "T", T, "C", C, "first_row", first_row,
             "(sizes must be positive, first_row not negative)");
  LOOM_CHECK(out != nullptr && wpe != nullptr,
             "position_embedding_forward: out and wpe must be non-null");
  const auto aligned16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  auto* out_ = reinterpret_cast<__nv_bfloat16*>(out);
  const auto* wpe_ = reinterpret_cast<const __nv_bfloat16*>(wpe);
  if (C % 8 == 0 && aligned16(out) && aligned16(wpe)) {
    position_embedding_forward_kernel<8><<<ceil_div(static_cast<int64_t>(N) * (C / 8), kThreads),
                                           kThreads, 0, stream>>>(out_, wpe_, N, T, C, first_row,
                                                                  doc_starts);
  } else {
    position_embedding_forward_kernel<1><<<ceil_div(static_cast<int64_t>(N) * C, kThreads),
                                           kThreads, 0, stream>>>(out_, wpe_, N, T, C, first_row,
                                                                  doc_starts);
  }
  LOOM_CUDA_CHECK_LAUNCH("position_embedding_forward_kernel");
}

void position_embedding_backward(float* dwpe, const bf16* dout, int N, int T, int C,
                                 int first_row, cudaStream_t stream, const int32_t* doc_starts) {
  LOOM_CHECK(N > 0 && T > 0 && C > 0 && first_row >= 0,
             "position_embedding_backward: N", N, "T", T, "C", C, "first_row", first_row,
             "(sizes must be positive, first_row not negative)");
  LOOM_CHECK(dwpe != nullptr && dout != nullptr,
             "position_embedding_backward: dwpe and dout must be non-null");
  const auto* dout_ = reinterpret_cast<const __nv_bfloat16*>(dout);
  if (doc_starts != nullptr) {
    packed_position_backward_kernel<<<ceil_div(static_cast<int64_t>(T) * C, kThreads), kThreads, 0,
                                      stream>>>(dwpe, dout_, doc_starts, N, T, C, first_row);
    LOOM_CUDA_CHECK_LAUNCH("packed_position_backward_kernel");
    return;
  }
  position_backward_kernel<<<ceil_div(static_cast<int64_t>(T) * C, kThreads), kThreads, 0,
                             stream>>>(dwpe, dout_, N, T, C, first_row);
  LOOM_CUDA_CHECK_LAUNCH("position_backward_kernel");
}

}  // namespace loom::kernels::cuda
