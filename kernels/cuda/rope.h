// Rotary position embeddings (Hugging Face Llama's "rotate half") on the GPU, in place on the
// queries and keys of a fused qkv buffer (CPU twin and the formulas: kernels/cpu/rope.h). Rows of
// qkv (N = B * T, (NH + 2 * NKV) * HS) hold [q: NH heads | k: NKV heads | v: NKV heads]; row n is
// at position first_position + n % T (- doc_starts[n] with documents packed into the sequences:
// doc_starts (B * T) i32 on the device, or null, as in kernels/cpu/rope.h); v is left as it is.
//
// Backward convention: dqkv is an activation gradient, OVERWRITTEN (in place: the transposed
// rotation of its dq and dk; dv untouched).
//
// One block per row: its threads compute the row's HS / 2 cos and sin once into shared memory
// (the precise sincosf of the f32 angle float(p) * inv_freq[i], not the fast intrinsic), then
// rotate the row's NH + NKV heads, 8 pairs per thread (16-byte accesses) where HS is a multiple of
// 16 and qkv 16-byte aligned, else one. bf16 in and out, f32 arithmetic.
#pragma once

#include "kernels/cuda/common.h"

namespace loom::kernels::cuda {

// The row's cos and sin live in shared memory: head sizes up to this (32 KiB).
constexpr int kRopeMaxHeadSize = 8192;

// Rotates q and k of qkv (B * T, (NH + 2 * NKV) * HS) bf16 in place by the angles of inv_freq
// (HS / 2) f32. HS even, at most kRopeMaxHeadSize. Twin: cpu::rope_forward.
void rope_forward(bf16* qkv, const float* inv_freq, int B, int T, int NH, int NKV, int HS, int first_position,
                  cudaStream_t stream, const int32_t* doc_starts = nullptr);

// The transposed rotation of dq and dk in dqkv (B * T, (NH + 2 * NKV) * HS) bf16, in place.
// Twin: cpu::rope_backward.
void rope_backward(bf16* dqkv, const float* inv_freq, int B, int T, int NH, int NKV, int HS, int first_position,
                   cudaStream_t stream, const int32_t* doc_starts = nullptr);

}  // namespace loom::kernels::cuda
