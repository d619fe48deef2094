// Rotary position embeddings on the CPU: OpenMP over rows (each independent, so the result is the
// same for any number of threads), a vectorised loop over each rotated head's pairs.
//
// Each position's cos and sin are computed once, shared by the B rows at that position and their
// NH + NKV rotated heads: in double from the f32 angle, then rounded, so that they are the
// correctly rounded f32 values (the GPU's sincosf is within 2 ulp of them). The angle itself is
// the f32 product float(p) * inv_freq[i], as transformers forms it (position_ids.float() times
// inv_freq).
#include "kernels/cpu/rope.h"

#include <climits>
#include <cmath>
#include <cstdint>
#include <numbers>

#include "core/base/check.h"

namespace loom::kernels::cpu {
namespace {

// a * b rounded to f32 on its own. PyTorch evaluates each operator of the llama3 formulas as its
// own kernel, rounding every product; a fused multiply-add the compiler may form from a * b + c
// (one rounding) would move the last bit. The volatile store keeps the product a separate step.
float rounded_product(float a, float b) {
  volatile float p = a * b;
  return p;
}

void check_llama3_scaling(const RopeScaling& s) {
  const char* what = "llama3 rope scaling (rope_scaling in a Hugging Face config):";
  if (!(s.factor >= 1.0f) || !std::isfinite(s.factor))
    fail_user(what, "factor", s.factor, "must be finite and at least 1");
  if (!(s.low_freq_factor > 0.0f) || !std::isfinite(s.low_freq_factor)) {
    fail_user(what, "low_freq_factor", s.low_freq_factor, "must be finite and positive");
  }
  if (!(s.high_freq_factor > s.low_freq_factor) || !std::isfinite(s.high_freq_factor)) {
    fail_user(what, "high_freq_factor", s.high_freq_factor, "must be finite and above low_freq_factor",
              s.low_freq_factor);
  }
  if (s.original_max_position <= 0) {
    fail_user(what, "original_max_position_embeddings", s.original_max_position, "must be positive");
  }
}

// transformers' _compute_llama3_parameters, operator by operator in f32. `2 pi / inv_freq` and
// `context / wavelen` are a Python scalar divided by a tensor, which PyTorch evaluates as the
// tensor's reciprocal times the scalar (two roundings); the thresholds are Python doubles that the
// comparisons round to f32.
void apply_llama3_scaling(std::vector<float>& inv_freq, const RopeScaling& s) {
  const float two_pi = static_cast<float>(2.0 * std::numbers::pi);
  const float context = static_cast<float>(s.original_max_position);
  const float low_freq_wavelength = context / s.low_freq_factor;
  const float high_freq_wavelength = context / s.high_freq_factor;
  for (float& f : inv_freq) {
    const float wavelength = rounded_product(1.0f / f, two_pi);
    const float scaled = wavelength > low_freq_wavelength ? f / s.factor : f;
    const bool medium = !(wavelength < high_freq_wavelength) && !(wavelength > low_freq_wavelength);
    if (!medium) {
      f = scaled;
      continue;
    }
    const float smooth =
        (rounded_product(1.0f / wavelength, context) - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    f = rounded_product(1.0f - smooth, scaled) / s.factor + rounded_product(smooth, scaled);
  }
}

void check_sizes(const char* op, const void* qkv, const float* inv_freq, int B, int T, int NH, int NKV, int HS,
                 int first_position) {
  LOOM_CHECK(B > 0 && T > 0 && NH > 0 && NKV > 0 && HS > 0, op, "sizes must be positive: B", B, "T", T, "NH", NH, "NKV",
             NKV, "HS", HS);
  LOOM_CHECK(HS % 2 == 0, op, ": the head size", HS, "must be even");
  LOOM_CHECK(first_position >= 0 && first_position <= INT_MAX - (T - 1), op, ": positions", first_position, "..",
             static_cast<int64_t>(first_position) + T - 1, "outside 0 ..", INT_MAX);
  LOOM_CHECK(qkv != nullptr && inv_freq != nullptr, op, ": qkv and inv_freq must be non-null");
}

// Rotates the NH + NKV query and key heads of every row by its position's angles, times `sign`
// (+1: the rotation, -1: its transpose; negating sin is exact, so the two are exact transposes).
void rotate(float* qkv, const float* inv_freq, int B, int T, int NH, int NKV, int HS, int first_position, float sign,
            const int32_t* doc_starts) {
  const int half = HS / 2, rotated_heads = NH + NKV;
  const int64_t N = static_cast<int64_t>(B) * T, width = static_cast<int64_t>(NH + 2 * NKV) * HS;
  std::vector<float> table(static_cast<size_t>(T) * HS);  // (T, HS): [cos (half) | sign * sin (half)]
#pragma omp parallel for schedule(static)
  for (int t = 0; t < T; ++t) {
    const float position = static_cast<float>(first_position + t);
    float* c = table.data() + static_cast<int64_t>(t) * HS;
    for (int i = 0; i < half; ++i) {
      const double angle = position * inv_freq[i];  // the f32 product, widened
      c[i] = static_cast<float>(std::cos(angle));
      c[half + i] = sign * static_cast<float>(std::sin(angle));
    }
  }
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    // A document's positions restart at its start: t - doc_starts[n] lies in 0 .. t, in the table.
    const int64_t t = doc_starts ? n % T - doc_starts[n] : n % T;
    const float* c = table.data() + t * HS;  // (half)
    const float* s = c + half;                     // (half)
    float* row = qkv + n * width;                  // ((NH + 2 NKV) * HS)
    for (int h = 0; h < rotated_heads; ++h) {
      float* x = row + static_cast<int64_t>(h) * HS;  // (half): the first half of the head
      float* y = x + half;                            // (half): the second half
#pragma omp simd
      for (int i = 0; i < half; ++i) {
        const float a = x[i], b = y[i];
        x[i] = a * c[i] - b * s[i];
        y[i] = b * c[i] + a * s[i];
      }
    }
  }
}

}  // namespace

std::vector<float> rope_inverse_frequencies(int head_size, float theta, const RopeScaling& scaling) {
  if (head_size <= 0 || head_size % 2 != 0) {
    fail_user(
        "rotary position embeddings rotate pairs of channels, so the head size (n_embd / n_head) must be "
        "even and positive, got",
        head_size);
  }
  if (!(theta > 0.0f) || !std::isfinite(theta)) fail_user("rope theta", theta, "must be a finite positive number");
  if (scaling.llama3) check_llama3_scaling(scaling);
  const int half = head_size / 2;
  std::vector<float> inv_freq(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_size);
    // The power in double rounded once: the correctly rounded f32 power, which PyTorch's f32 pow
    // gives for these arguments.
    const float power = static_cast<float>(std::pow(static_cast<double>(theta), static_cast<double>(exponent)));
    inv_freq[static_cast<size_t>(i)] = 1.0f / power;
  }
  if (scaling.llama3) apply_llama3_scaling(inv_freq, scaling);
  return inv_freq;
}

void rope_forward(float* qkv, const float* inv_freq, int B, int T, int NH, int NKV, int HS, int first_position,
                  const int32_t* doc_starts) {
  check_sizes("rope_forward", qkv, inv_freq, B, T, NH, NKV, HS, first_position);
  rotate(qkv, inv_freq, B, T, NH, NKV, HS, first_position, 1.0f, doc_starts);
}

void rope_backward(float* dqkv, const float* inv_freq, int B, int T, int NH, int NKV, int HS, int first_position,
                   const int32_t* doc_starts) {
  check_sizes("rope_backward", dqkv, inv_freq, B, T, NH, NKV, HS, first_position);
  rotate(dqkv, inv_freq, B, T, NH, NKV, HS, first_position, -1.0f, doc_starts);
}

}  // namespace loom::kernels::cpu
