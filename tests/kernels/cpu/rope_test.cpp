// Rotary position embeddings against a double-precision reference: the inverse frequencies (plain
// and Llama 3 scaled) against their formula in double and bit for bit against PyTorch's f32 values,
// the rotation against Hugging Face's apply_rotary_pos_emb, forward over grouped-query layouts and
// offset positions, the backward as the adjoint (inner products, finite differences), decoding rows
// against the full forward, thread independence, and the user errors.
#include "kernels/cpu/rope.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numbers>
#include <string>
#include <vector>

#include "test_util.h"

namespace loom::kernels::cpu {
namespace {

using loom::testing::all_close;
using loom::testing::bitwise_equal;
using loom::testing::random_floats;
using loom::testing::ScopedThreadCount;
using loom::testing::user_error_of;

struct Layout {
  int B, T, NH, NKV, HS, first_position;
};
// NKV = NH (multi-head), NKV = 1 (multi-query), 1 < NKV < NH (grouped); positions from 0, offset,
// and far out (angles of 10^5 radians); decoding rows (T = 1).
const Layout kLayouts[] = {{2, 5, 4, 4, 8, 0},   {3, 7, 6, 1, 16, 11}, {2, 9, 6, 2, 64, 1000},
                           {1, 3, 8, 2, 128, 0}, {4, 1, 4, 2, 32, 77}, {1, 2, 3, 3, 2, 100000}};

size_t width(const Layout& l) { return static_cast<size_t>(l.NH + 2 * l.NKV) * l.HS; }
size_t numel(const Layout& l) { return static_cast<size_t>(l.B) * l.T * width(l); }

// 1 / theta^(2i / HS) in double, Llama 3's scaling applied in double.
std::vector<double> inverse_frequencies_ref(int HS, double theta, const RopeScaling* llama3) {
  std::vector<double> f(static_cast<size_t>(HS / 2));
  for (int i = 0; i < HS / 2; ++i) f[static_cast<size_t>(i)] = 1.0 / std::pow(theta, 2.0 * i / HS);
  if (llama3 == nullptr) return f;
  const double context = llama3->original_max_position;
  for (double& x : f) {
    const double wavelength = 2 * std::numbers::pi / x;
    if (wavelength > context / llama3->low_freq_factor) {
      x /= llama3->factor;
    } else if (wavelength >= context / llama3->high_freq_factor) {
      const double smooth =
          (context / wavelength - llama3->low_freq_factor) / (llama3->high_freq_factor - llama3->low_freq_factor);
      x = (1 - smooth) * x / llama3->factor + smooth * x;
    }
  }
  return f;
}

// The rotation in double; the angle is the f32 product float(p) * inv_freq[i], as specified.
std::vector<double> rope_ref(const std::vector<double>& qkv, const std::vector<float>& inv_freq, const Layout& l,
                             bool transpose) {
  std::vector<double> out(qkv);
  const int half = l.HS / 2;
  for (int n = 0; n < l.B * l.T; ++n) {
    const float position = static_cast<float>(l.first_position + n % l.T);
    for (int h = 0; h < l.NH + l.NKV; ++h) {
      const size_t head = static_cast<size_t>(n) * width(l) + static_cast<size_t>(h) * l.HS;
      for (int i = 0; i < half; ++i) {
        const double angle = position * inv_freq[static_cast<size_t>(i)];
        const double c = std::cos(angle), s = transpose ? -std::sin(angle) : std::sin(angle);
        const double a = qkv[head + i], b = qkv[head + half + i];
        out[head + i] = a * c - b * s;
        out[head + half + i] = b * c + a * s;
      }
    }
  }
  return out;
}

std::vector<double> widened(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) sum += static_cast<double>(a[i]) * b[i];
  return sum;
}

const RopeScaling kLlama31 = {true, 8.0f, 1.0f, 4.0f, 8192};

TEST(RopeTest, InverseFrequenciesMatchTheFormulaInDouble) {
  // The f32 exponent 2i/HS is off by <= 2^-24 relatively, which moves theta^e by ln(theta) e 2^-24
  // <= 14 * 6e-8 for theta <= 10^6; the power's and the reciprocal's roundings add 2^-23: rtol 1e-6.
  for (const auto& [HS, theta] : {std::pair{8, 10000.0f}, {64, 10000.0f}, {128, 500000.0f}, {96, 1e6f}, {2, 10.0f}}) {
    SCOPED_TRACE(::testing::Message() << "HS=" << HS << " theta=" << theta);
    EXPECT_TRUE(all_close(rope_inverse_frequencies(HS, theta), inverse_frequencies_ref(HS, theta, nullptr), 1e-6, 0));
  }
  // Scaled: the interpolated band adds (1 - s) and s of a few ulp each, times factor 8: rtol 1e-5.
  for (const RopeScaling& s :
       {kLlama31, RopeScaling{true, 32.0f, 1.0f, 4.0f, 8192}, RopeScaling{true, 4.0f, 2.0f, 3.0f, 1024}}) {
    SCOPED_TRACE(::testing::Message() << "factor=" << s.factor << " low=" << s.low_freq_factor
                                      << " high=" << s.high_freq_factor << " context=" << s.original_max_position);
    const std::vector<float> scaled = rope_inverse_frequencies(128, 500000.0f, s);
    const std::vector<float> plain = rope_inverse_frequencies(128, 500000.0f);
    EXPECT_TRUE(all_close(scaled, inverse_frequencies_ref(128, 500000.0, &s), 1e-5, 0));
    // High frequencies are kept and low ones divided by the factor, bit for bit.
    for (size_t i = 0; i < plain.size(); ++i) {
      const double wavelength = 2 * std::numbers::pi / plain[i], context = s.original_max_position;
      if (wavelength < context / s.high_freq_factor) {
        EXPECT_EQ(scaled[i], plain[i]) << i;
      } else if (wavelength > context / s.low_freq_factor) {
        EXPECT_EQ(scaled[i], plain[i] / s.factor) << i;
      }
    }
  }
}

TEST(RopeTest, Llama31FrequenciesAreBitwisePyTorchs) {
  // Llama 3.1's head_dim 128, rope_theta 500000 and rope_scaling {factor 8, low_freq_factor 1,
  // high_freq_factor 4, original_max_position_embeddings 8192}: transformers'
  // _compute_default_rope_parameters and _compute_llama3_parameters re-typed into PyTorch (1.13,
  // CPU, f32) and printed with float.hex(). The first 29 are the plain frequencies (wavelengths
  // under 2048), the last 29 the plain ones / 8 (over 8192), 6 interpolated between.
  const std::vector<float> expected = {
      0x1p+0f,         0x1.a11582p-1f,  0x1.53c38cp-1f,  0x1.14c708p-1f,  0x1.c2ef78p-2f,  0x1.6f56fap-2f,
      0x1.2b3dc6p-2f,  0x1.e788c2p-3f,  0x1.8d276p-3f,   0x1.43874p-3f,   0x1.078d4p-3f,   0x1.ad6338p-4f,
      0x1.5dc95ap-4f,  0x1.1cf13p-4f,   0x1.d03ccep-5f,  0x1.7a2d08p-5f,  0x1.34119p-5f,   0x1.f5ea7ep-6f,
      0x1.98de92p-6f,  0x1.4d1272p-6f,  0x1.0f5386p-6f,  0x1.ba0dd8p-7f,  0x1.681adap-7f,  0x1.2558fep-7f,
      0x1.ddee9ep-8f,  0x1.8554ecp-8f,  0x1.3d2804p-8f,  0x1.025c6ap-8f,  0x1.a4ee4p-9f,   0x1.1bfa0cp-9f,
      0x1.67a23ap-10f, 0x1.c12f3cp-11f, 0x1.132ba4p-11f, 0x1.47e21p-12f,  0x1.765ba4p-13f, 0x1.90d10cp-14f,
      0x1.46831ap-14f, 0x1.09fb7ep-14f, 0x1.b15902p-15f, 0x1.610332p-15f, 0x1.1f91fp-15f,  0x1.d484dep-16f,
      0x1.7da9e8p-16f, 0x1.36e8eap-16f, 0x1.fa8b86p-17f, 0x1.9ca3eap-17f, 0x1.5024d6p-17f, 0x1.11d41ep-17f,
      0x1.be2188p-18f, 0x1.6b6d0ep-18f, 0x1.280d96p-18f, 0x1.e257p-19f,   0x1.88ec2p-19f,  0x1.4014d2p-19f,
      0x1.04be68p-19f, 0x1.a8d01p-20f,  0x1.5a0f4ep-20f, 0x1.19e8p-20f,   0x1.cb4a9ap-21f, 0x1.76258ep-21f,
      0x1.30c94ep-21f, 0x1.f09184p-22f, 0x1.94836p-22f,  0x1.4985fep-22f};
  EXPECT_TRUE(bitwise_equal(rope_inverse_frequencies(128, 500000.0f, kLlama31), expected));
}

TEST(RopeTest, RotationMatchesHuggingFaceApplyRotaryPosEmb) {
  // q of head size 8 at positions 999, 1000, 1001 (theta 10000), row t holding (t + 1) * base:
  // Hugging Face's LlamaRotaryEmbedding and apply_rotary_pos_emb (q * cos + rotate_half(q) * sin)
  // in PyTorch f32, printed with 9 digits. Their cos and sin are within an ulp of ours: atol 1e-6.
  const Layout l{1, 3, 1, 1, 8, 999};
  const float base[8] = {0.5f, -0.25f, 0.125f, 1.0f, -0.75f, 0.375f, -0.625f, 0.25f};
  const std::vector<float> expected_q = {0.479979336f, 0.0193562061f, -0.440310687f,  0.330910921f, -0.762967765f,
                                         0.450278044f, 0.460843265f,  0.976216137f,   1.80269837f,  -0.0513851941f,
                                         -0.88979429f, 0.659869194f,  -0.0166890025f, 0.899921954f, 0.912834048f,
                                         1.95309305f,  1.4820683f,    -0.211454093f,  -1.34831727f, 0.986873448f,
                                         2.26185179f,  1.33544457f,   1.35583568f,    2.93062806f};
  std::vector<float> qkv(numel(l));
  for (int t = 0; t < 3; ++t) {
    for (int j = 0; j < 3 * 8; ++j) qkv[static_cast<size_t>(t * 24 + j)] = static_cast<float>(t + 1) * base[j % 8];
  }
  const std::vector<float> inv_freq = rope_inverse_frequencies(8, 10000.0f);
  rope_forward(qkv.data(), inv_freq.data(), l.B, l.T, l.NH, l.NKV, l.HS, l.first_position);
  std::vector<float> q, k, v;
  for (int t = 0; t < 3; ++t) {
    const auto row = qkv.begin() + t * 24;
    q.insert(q.end(), row, row + 8);
    k.insert(k.end(), row + 8, row + 16);
    v.insert(v.end(), row + 16, row + 24);
  }
  EXPECT_TRUE(all_close(q, expected_q, 0, 1e-6));
  EXPECT_TRUE(all_close(k, expected_q, 0, 1e-6));  // the keys held the same values
  for (int t = 0; t < 3; ++t) {
    for (int j = 0; j < 8; ++j) EXPECT_EQ(v[static_cast<size_t>(t * 8 + j)], static_cast<float>(t + 1) * base[j]);
  }
}

TEST(RopeTest, ForwardAndBackwardMatchDoubleReference) {
  // Each output is a c - b s of inputs in [-1, 1] with cos and sin correctly rounded (2^-24
  // relatively each) and two products and a sum rounded: within ~3 * 2^-24 of the exact value;
  // atol 5e-7. v (and dv) is untouched: compared exactly by the same check (the reference copies it).
  for (const Layout& l : kLayouts) {
    SCOPED_TRACE(::testing::Message() << "B=" << l.B << " T=" << l.T << " NH=" << l.NH << " NKV=" << l.NKV
                                      << " HS=" << l.HS << " first_position=" << l.first_position);
    const std::vector<float> inv_freq = rope_inverse_frequencies(l.HS, 500000.0f, kLlama31);
    const std::vector<float> x = random_floats(numel(l), 1);
    std::vector<float> y = x, dx = x;
    rope_forward(y.data(), inv_freq.data(), l.B, l.T, l.NH, l.NKV, l.HS, l.first_position);
    rope_backward(dx.data(), inv_freq.data(), l.B, l.T, l.NH, l.NKV, l.HS, l.first_position);
    EXPECT_TRUE(all_close(y, rope_ref(widened(x), inv_freq, l, false), 0, 5e-7));
    EXPECT_TRUE(all_close(dx, rope_ref(widened(x), inv_freq, l, true), 0, 5e-7));
    const size_t v_offset = static_cast<size_t>(l.NH + l.NKV) * l.HS;
    for (size_t n = 0; n < static_cast<size_t>(l.B * l.T); ++n) {
      const size_t at = n * width(l) + v_offset;
      ASSERT_EQ(0, std::memcmp(&y[at], &x[at], static_cast<size_t>(l.NKV * l.HS) * sizeof(float))) << "row " << n;
    }
  }
}

TEST(RopeTest, BackwardIsTheAdjointOfTheForward) {
  // <R x, g> == <x, R^T g>: each side is a sum of products of f32 values within ~3 * 2^-24 of
  // exact, so the two agree to ~1e-7 of |x| |g|.
  for (const Layout& l : kLayouts) {
    SCOPED_TRACE(::testing::Message() << "B=" << l.B << " T=" << l.T << " NH=" << l.NH << " NKV=" << l.NKV
                                      << " HS=" << l.HS << " first_position=" << l.first_position);
    const std::vector<float> inv_freq = rope_inverse_frequencies(l.HS, 10000.0f);
    const std::vector<float> x = random_floats(numel(l), 2), g = random_floats(numel(l), 3);
    std::vector<float> rx = x, rtg = g;
    rope_forward(rx.data(), inv_freq.data(), l.B, l.T, l.NH, l.NKV, l.HS, l.first_position);
    rope_backward(rtg.data(), inv_freq.data(), l.B, l.T, l.NH, l.NKV, l.HS, l.first_position);
    const double scale = std::sqrt(dot(x, x) * dot(g, g));
    EXPECT_NEAR(dot(rx, g), dot(x, rtg), 1e-6 * scale);
    // The rotation is orthogonal: the backward undoes the forward.
    std::vector<float> back = rx;
    rope_backward(back.data(), inv_freq.data(), l.B, l.T, l.NH, l.NKV, l.HS, l.first_position);
    EXPECT_TRUE(all_close(back, x, 0, 1e-6));
  }
}

TEST(RopeTest, BackwardMatchesFiniteDifferences) {
  // L = sum(rope(qkv) * w) in double; dL/dqkv by central differences. L is linear in qkv, so the
  // differences are exact up to the rounding of L (~1e-16 / h): within 1e-6 of the gradient.
  const Layout l{2, 3, 4, 2, 8, 5};
  const std::vector<float> inv_freq = rope_inverse_frequencies(l.HS, 10000.0f, RopeScaling{true, 4.0f, 1.0f, 2.0f, 16});
  std::vector<double> qkv = widened(random_floats(numel(l), 4));
  const std::vector<float> w = random_floats(numel(l), 5);
  std::vector<float> grad = w;
  rope_backward(grad.data(), inv_freq.data(), l.B, l.T, l.NH, l.NKV, l.HS, l.first_position);
  auto loss = [&] {
    const std::vector<double> y = rope_ref(qkv, inv_freq, l, false);
    double sum = 0;
    for (size_t i = 0; i < y.size(); ++i) sum += y[i] * w[i];
    return sum;
  };
  loom::testing::expect_finite_differences(qkv, grad, loss, 1e-3, 1, 0, 1e-6, "dqkv");
}

TEST(RopeTest, DecodingRowsMatchTheFullForward) {
  // Decoding rotates one new row at T = 1 and first_position = its position: bit for bit what the
  // full forward gives that row.
  const Layout l{2, 11, 4, 2, 16, 3};
  const std::vector<float> inv_freq = rope_inverse_frequencies(l.HS, 500000.0f, kLlama31);
  const std::vector<float> x = random_floats(numel(l), 6);
  std::vector<float> full = x;
  rope_forward(full.data(), inv_freq.data(), l.B, l.T, l.NH, l.NKV, l.HS, l.first_position);
  std::vector<float> stepped = x;
  for (int n = 0; n < l.B * l.T; ++n) {
    rope_forward(stepped.data() + static_cast<size_t>(n) * width(l), inv_freq.data(), 1, 1, l.NH, l.NKV, l.HS,
                 l.first_position + n % l.T);
  }
  EXPECT_TRUE(bitwise_equal(stepped, full));
}

TEST(RopeTest, ResultDoesNotDependOnThreadCount) {
  const Layout l{3, 67, 8, 2, 64, 9};
  const std::vector<float> inv_freq = rope_inverse_frequencies(l.HS, 10000.0f);
  const std::vector<float> x = random_floats(numel(l), 7);
  std::vector<float> y[2], dx[2];
  const int threads[2] = {1, 3};
  for (int k = 0; k < 2; ++k) {
    ScopedThreadCount scope(threads[k]);
    y[k] = x;
    dx[k] = x;
    rope_forward(y[k].data(), inv_freq.data(), l.B, l.T, l.NH, l.NKV, l.HS, l.first_position);
    rope_backward(dx[k].data(), inv_freq.data(), l.B, l.T, l.NH, l.NKV, l.HS, l.first_position);
  }
  EXPECT_TRUE(bitwise_equal(y[0], y[1]));
  EXPECT_TRUE(bitwise_equal(dx[0], dx[1]));
}

TEST(RopeTest, BadHeadSizeThetaAndScalingAreUserErrors) {
  auto error_of = [](int HS, float theta, RopeScaling s) {
    return user_error_of([&] { rope_inverse_frequencies(HS, theta, s); });
  };
  auto has = [](const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; };
  EXPECT_TRUE(has(error_of(7, 10000.0f, {}), "head size (n_embd / n_head) must be even and positive, got 7"))
      << error_of(7, 10000.0f, {});
  EXPECT_TRUE(has(error_of(0, 10000.0f, {}), "must be even and positive, got 0"));
  EXPECT_TRUE(has(error_of(8, 0.0f, {}), "rope theta 0 must be a finite positive number"));
  EXPECT_TRUE(has(error_of(8, -1.0f, {}), "rope theta -1 must be a finite positive number"));
  EXPECT_TRUE(has(error_of(8, std::nanf(""), {}), "must be a finite positive number"));
  EXPECT_TRUE(has(error_of(8, 10000.0f, {true, 0.5f, 1.0f, 4.0f, 8192}), "factor 0.5 must be finite and at least 1"));
  EXPECT_TRUE(
      has(error_of(8, 10000.0f, {true, 8.0f, 0.0f, 4.0f, 8192}), "low_freq_factor 0 must be finite and positive"));
  EXPECT_TRUE(has(error_of(8, 10000.0f, {true, 8.0f, 4.0f, 4.0f, 8192}),
                  "high_freq_factor 4 must be finite and above low_freq_factor 4"));
  EXPECT_TRUE(
      has(error_of(8, 10000.0f, {true, 8.0f, 1.0f, 4.0f, 0}), "original_max_position_embeddings 0 must be positive"));
  // Without llama3 the scaling fields are not read.
  EXPECT_EQ(error_of(8, 10000.0f, {false, 0.0f, 0.0f, 0.0f, 0}), "(no error)");
}

}  // namespace
}  // namespace loom::kernels::cpu
