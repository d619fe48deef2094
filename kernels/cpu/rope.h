// Rotary position embeddings (RoPE), Hugging Face Llama's convention ("rotate half"), applied in
// place to the queries and keys of a fused qkv buffer (CPU reference path).
//
// A head vector x of HS values (HS even, half = HS / 2) at position p is rotated pairwise: with
// angle_i = float(p) * inv_freq[i] in f32, c = cos(angle_i), s = sin(angle_i), i in [0, half),
//   out[i] = x[i] * c - x[i + half] * s,   out[i + half] = x[i + half] * c + x[i] * s.
// Rows of qkv (N = B * T, (NH + 2 * NKV) * HS) hold [q: NH heads | k: NKV heads | v: NKV heads]
// (grouped-query attention; NKV = NH is multi-head attention); row n sits at position
// first_position + n % T. q and k are rotated, v is left as it is. With documents packed into rows,
// doc_starts (B * T) gives each row's document start within its sequence (see
// kernels/cpu/attention.h) and row n sits at position first_position + n % T - doc_starts[n]:
// positions restart at every document.
//
// Backward convention: the rotation is linear and orthogonal, so its backward is the transposed
// rotation (angle -angle_i) applied in place to dq and dk of dqkv, dv untouched. dqkv is the
// activation gradient, OVERWRITTEN (here: in place) as every activation gradient.
#pragma once

#include <cstdint>
#include <vector>

namespace loom::kernels::cpu {

// Llama 3's frequency scaling ("rope_scaling": {"rope_type": "llama3", ...} in a Hugging Face
// config). With llama3 false the frequencies are the plain ones and the other fields are unused.
struct RopeScaling {
  bool llama3 = false;
  float factor = 8.0f;               // "factor": low frequencies are divided by it
  float low_freq_factor = 1.0f;      // "low_freq_factor"
  float high_freq_factor = 4.0f;     // "high_freq_factor"
  int original_max_position = 8192;  // "original_max_position_embeddings"
};

// inv_freq (head_size / 2) as transformers computes it in f32: inv_freq[i] = 1 / theta^(2i /
// head_size) (modeling_rope_utils' default); then, with scaling.llama3, _compute_llama3_parameters:
// a frequency whose wavelength 2 pi / inv_freq[i] exceeds original_max_position / low_freq_factor
// is divided by factor, one whose wavelength is under original_max_position / high_freq_factor is
// kept, and those between are interpolated smoothly. Bit for bit PyTorch's f32 values. Throws
// UserError for an odd or non-positive head size, a theta that is not a finite positive number and
// scaling factors out of range.
std::vector<float> rope_inverse_frequencies(int head_size, float theta, const RopeScaling& scaling = {});

// Rotates q and k of qkv (B * T, (NH + 2 * NKV) * HS) in place; inv_freq (HS / 2). Row n is at
// position first_position + n % T (- doc_starts[n] where doc_starts is not null). Rows are
// independent: the result does not depend on the number of threads.
void rope_forward(float* qkv, const float* inv_freq, int B, int T, int NH, int NKV, int HS, int first_position,
                  const int32_t* doc_starts = nullptr);

// The transposed rotation of dq and dk in dqkv (B * T, (NH + 2 * NKV) * HS), in place: the
// gradient of qkv before rope_forward given the gradient after it. dv is left as it is.
void rope_backward(float* dqkv, const float* inv_freq, int B, int T, int NH, int NKV, int HS, int first_position,
                   const int32_t* doc_starts = nullptr);

}  // namespace loom::kernels::cpu
