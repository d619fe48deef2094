// Tests for the tiled causal attention with grouped-query heads: forward, backward and decode
// against a naive double-precision multi-head reference run on K and V repeated explicitly per
// query head (the gradient of a kv head is then the sum over its repeats), backward also against
// central finite differences, plus accumulate semantics and bitwise determinism across thread
// counts. Every test covers NKV == NH (multi-head), NKV == 1 (multi-query) and 1 < NKV < NH.
//
// Tolerances: the kernel computes in float with a ~2 ulp exp, summing at most a few hundred terms
// of magnitude <= 1, so forward, decode and analytic backward are compared at rtol 1e-4, atol 2e-5.
// Finite differences (double, step 1e-3, central) have truncation error ~1e-7 and are compared at
// rtol 1e-3, atol 1e-4, which still catches any wrong term. Decode and the forward row it must
// reproduce run the same float code on the same inputs: rtol 1e-6, atol 1e-7.
#include "kernels/cpu/attention.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/base/check.h"
#include "test_util.h"

namespace loom::kernels::cpu {
namespace {

using loom::testing::all_close;
using loom::testing::poisoned;
using loom::testing::random_floats;

struct Shape {
  int B, T, C, NH, NKV;
  int HS() const { return C / NH; }
  int W() const { return C + 2 * NKV * HS(); }  // a qkv row: [q: C | k: NKV*HS | v: NKV*HS]
  size_t qkv_size() const { return static_cast<size_t>(B) * T * W(); }
  size_t out_size() const { return static_cast<size_t>(B) * T * C; }
  size_t lse_size() const { return static_cast<size_t>(B) * NH * T; }
};

std::string name(const Shape& s) {
  return "B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) + " C=" + std::to_string(s.C) +
         " NH=" + std::to_string(s.NH) + " NKV=" + std::to_string(s.NKV);
}

// Column of element d of head `head` of part (0 q, 1 k, 2 v) in a grouped row of shape s, and in
// the repeated (multi-head) row of width 3C.
int grouped_column(const Shape& s, int part, int head, int d) {
  return (part == 0 ? 0 : s.C + (part - 1) * s.NKV * s.HS()) + head * s.HS() + d;
}
int repeated_column(const Shape& s, int part, int h, int d) { return part * s.C + h * s.HS() + d; }

// The multi-head qkv (B, T, 3C) in which query head h's k and v are copies of kv head
// h / (NH / NKV): Hugging Face's repeat_kv, done explicitly.
std::vector<double> repeat_kv(const std::vector<double>& qkv, const Shape& s) {
  const int G = s.NH / s.NKV;
  std::vector<double> full(static_cast<size_t>(s.B) * s.T * 3 * s.C);
  for (size_t row = 0; row < static_cast<size_t>(s.B) * s.T; ++row) {
    for (int part = 0; part < 3; ++part) {
      for (int h = 0; h < s.NH; ++h) {
        for (int d = 0; d < s.HS(); ++d) {
          full[row * 3 * s.C + repeated_column(s, part, h, d)] =
              qkv[row * s.W() + grouped_column(s, part, part == 0 ? h : h / G, d)];
        }
      }
    }
  }
  return full;
}

// The gradient of the grouped qkv from that of the repeated one: each kv head sums its repeats.
std::vector<double> sum_repeats(const std::vector<double>& full, const Shape& s) {
  const int G = s.NH / s.NKV;
  std::vector<double> grouped(s.qkv_size(), 0.0);
  for (size_t row = 0; row < static_cast<size_t>(s.B) * s.T; ++row) {
    for (int part = 0; part < 3; ++part) {
      for (int h = 0; h < s.NH; ++h) {
        for (int d = 0; d < s.HS(); ++d) {
          grouped[row * s.W() + grouped_column(s, part, part == 0 ? h : h / G, d)] +=
              full[row * 3 * s.C + repeated_column(s, part, h, d)];
        }
      }
    }
  }
  return grouped;
}

// Naive multi-head attention in double on qkv (B, T, 3C): out (B, T, C), lse (B, NH, T), and if
// dout is given, dqkv (B, T, 3C).
void multi_head_reference(const std::vector<double>& qkv, const Shape& s, std::vector<double>* out,
                          std::vector<double>* lse, const std::vector<double>* dout,
                          std::vector<double>* dqkv) {
  const int B = s.B, T = s.T, C = s.C, NH = s.NH, HS = C / NH;
  const double scale = 1.0 / std::sqrt(static_cast<double>(HS));
  out->assign(static_cast<size_t>(B) * T * C, 0.0);
  lse->assign(static_cast<size_t>(B) * NH * T, 0.0);
  if (dqkv) dqkv->assign(qkv.size(), 0.0);
  auto at = [&](int b, int t, int part, int h, int d) -> size_t {
    return (static_cast<size_t>(b) * T + t) * 3 * C + part * C + h * HS + d;
  };
  std::vector<double> p(T), dp(T);
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      for (int i = 0; i < T; ++i) {
        double max = -1e300;
        for (int j = 0; j <= i; ++j) {
          double dot = 0;
          for (int d = 0; d < HS; ++d) dot += qkv[at(b, i, 0, h, d)] * qkv[at(b, j, 1, h, d)];
          p[j] = dot * scale;
          max = std::max(max, p[j]);
        }
        double sum = 0;
        for (int j = 0; j <= i; ++j) sum += std::exp(p[j] - max);
        (*lse)[(static_cast<size_t>(b) * NH + h) * T + i] = max + std::log(sum);
        for (int j = 0; j <= i; ++j) p[j] = std::exp(p[j] - max) / sum;
        double* o = out->data() + (static_cast<size_t>(b) * T + i) * C + h * HS;
        for (int j = 0; j <= i; ++j) {
          for (int d = 0; d < HS; ++d) o[d] += p[j] * qkv[at(b, j, 2, h, d)];
        }
        if (!dout) continue;
        const double* d_o = dout->data() + (static_cast<size_t>(b) * T + i) * C + h * HS;
        double D = 0;
        for (int d = 0; d < HS; ++d) D += d_o[d] * o[d];
        for (int j = 0; j <= i; ++j) {
          dp[j] = 0;
          for (int d = 0; d < HS; ++d) dp[j] += d_o[d] * qkv[at(b, j, 2, h, d)];
          const double ds = p[j] * (dp[j] - D);
          for (int d = 0; d < HS; ++d) {
            (*dqkv)[at(b, i, 0, h, d)] += ds * qkv[at(b, j, 1, h, d)] * scale;
            (*dqkv)[at(b, j, 1, h, d)] += ds * qkv[at(b, i, 0, h, d)] * scale;
            (*dqkv)[at(b, j, 2, h, d)] += p[j] * d_o[d];
          }
        }
      }
    }
  }
}

// Grouped attention in double on qkv (B, T, W) through the repeated multi-head reference; dqkv,
// when dout is given, is (B, T, W).
void reference_attention(const std::vector<double>& qkv, const Shape& s, std::vector<double>* out,
                         std::vector<double>* lse, const std::vector<double>* dout = nullptr,
                         std::vector<double>* dqkv = nullptr) {
  std::vector<double> dfull;
  multi_head_reference(repeat_kv(qkv, s), s, out, lse, dout, dqkv ? &dfull : nullptr);
  if (dqkv) *dqkv = sum_repeats(dfull, s);
}

std::vector<double> to_double(const std::vector<float>& x) { return {x.begin(), x.end()}; }

const Shape kShapes[] = {
    {1, 1, 8, 1, 1},     // a single position
    {2, 5, 12, 4, 4},    // head size 3, not a power of two
    {2, 5, 12, 4, 2},    // the same, two query heads per kv head
    {1, 67, 24, 3, 1},   // T not a multiple of the query tile (32), odd head count, multi-query
    {2, 130, 64, 4, 4},  // several query tiles, the last partial
    {2, 130, 64, 4, 1},  // the same, multi-query
    {1, 67, 48, 6, 3},   // 1 < NKV < NH, odd kv head count
    {1, 64, 16, 1, 1},   // whole tiles only, one head
};

TEST(AttentionTest, ForwardMatchesReference) {
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(name(s));
    const auto qkv = random_floats(s.qkv_size(), 11);
    auto out = poisoned(s.out_size());
    auto lse = poisoned(s.lse_size());
    attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.C, s.NH, s.NKV);
    std::vector<double> out_ref, lse_ref;
    reference_attention(to_double(qkv), s, &out_ref, &lse_ref);
    EXPECT_TRUE(all_close(out, out_ref, 1e-4, 2e-5));
    EXPECT_TRUE(all_close(lse, lse_ref, 1e-4, 2e-5));
  }
}

TEST(AttentionTest, BackwardAccumulatesReferenceGradient) {
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(name(s));
    const size_t n_qkv = s.qkv_size();
    const auto qkv = random_floats(n_qkv, 21);
    const auto dout = random_floats(s.out_size(), 22);
    const auto initial = random_floats(n_qkv, 23);
    std::vector<float> out(dout.size()), lse(s.lse_size());
    attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.C, s.NH, s.NKV);
    auto dqkv = initial;
    attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), s.B, s.T,
                       s.C, s.NH, s.NKV);
    std::vector<double> out_ref, lse_ref, dqkv_ref;
    const auto dout_d = to_double(dout);
    reference_attention(to_double(qkv), s, &out_ref, &lse_ref, &dout_d, &dqkv_ref);
    for (size_t i = 0; i < n_qkv; ++i) dqkv_ref[i] += initial[i];
    EXPECT_TRUE(all_close(dqkv, dqkv_ref, 1e-4, 2e-5));
  }
}

TEST(AttentionTest, BackwardMatchesFiniteDifferences) {
  for (const Shape& s : {Shape{2, 67, 12, 2, 2}, Shape{2, 67, 12, 2, 1}, Shape{1, 45, 24, 4, 2}}) {
    SCOPED_TRACE(name(s));
    const size_t n_qkv = s.qkv_size();
    const auto qkv = random_floats(n_qkv, 31);
    const auto weights = random_floats(s.out_size(), 32);  // L = sum(out w)
    std::vector<float> out(weights.size()), lse(s.lse_size());
    attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.C, s.NH, s.NKV);
    std::vector<float> dqkv(n_qkv, 0.0f);
    attention_backward(dqkv.data(), weights.data(), qkv.data(), out.data(), lse.data(), s.B, s.T,
                       s.C, s.NH, s.NKV);

    auto loss = [&](const std::vector<double>& x) {
      std::vector<double> o, l;
      reference_attention(x, s, &o, &l);
      double sum = 0;
      for (size_t i = 0; i < o.size(); ++i) sum += o[i] * weights[i];
      return sum;
    };
    const double step = 1e-3;
    std::vector<float> got;
    std::vector<double> expected;
    auto x = to_double(qkv);
    for (size_t i = 0; i < n_qkv; i += 37) {  // a spread of q, k and v elements of every batch
      const double saved = x[i];
      x[i] = saved + step;
      const double up = loss(x);
      x[i] = saved - step;
      const double down = loss(x);
      x[i] = saved;
      got.push_back(dqkv[i]);
      expected.push_back((up - down) / (2 * step));
    }
    EXPECT_TRUE(all_close(got, expected, 1e-3, 1e-4));
  }
}

TEST(AttentionTest, DeterministicAcrossThreadCounts) {
  for (const Shape& s : {Shape{2, 130, 64, 4, 4}, Shape{2, 130, 64, 4, 2}, Shape{1, 130, 64, 4, 1}}) {
    SCOPED_TRACE(name(s));
    const auto qkv = random_floats(s.qkv_size(), 41);
    const auto dout = random_floats(s.out_size(), 42);
    auto run = [&](int threads, std::vector<float>* out, std::vector<float>* lse,
                   std::vector<float>* dqkv) {
      omp_set_num_threads(threads);
      out->assign(s.out_size(), 0.0f);
      lse->assign(s.lse_size(), 0.0f);
      dqkv->assign(s.qkv_size(), 0.0f);
      attention_forward(out->data(), lse->data(), qkv.data(), s.B, s.T, s.C, s.NH, s.NKV);
      attention_backward(dqkv->data(), dout.data(), qkv.data(), out->data(), lse->data(), s.B,
                         s.T, s.C, s.NH, s.NKV);
    };
    const int saved = omp_get_max_threads();
    std::vector<float> out1, lse1, dqkv1, out3, lse3, dqkv3;
    run(1, &out1, &lse1, &dqkv1);
    run(3, &out3, &lse3, &dqkv3);
    omp_set_num_threads(saved);
    EXPECT_EQ(0, std::memcmp(out1.data(), out3.data(), s.out_size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(lse1.data(), lse3.data(), s.lse_size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(dqkv1.data(), dqkv3.data(), s.qkv_size() * sizeof(float)));
  }
}

// Decodes the rows of qkv (B, T, W) one position at a time into caches (B, max_T, NKV*HS) whose
// rows start as NaN (decode must write row pos before it reads it, and never read a later row);
// returns the outputs (B, T, C) and leaves the caches in *k_cache, *v_cache.
std::vector<float> decode_all(const std::vector<float>& qkv, const Shape& s, int max_T,
                              std::vector<float>* k_cache, std::vector<float>* v_cache) {
  const int B = s.B, T = s.T, C = s.C, W = s.W();
  *k_cache = poisoned(static_cast<size_t>(B) * max_T * s.NKV * s.HS());
  *v_cache = poisoned(k_cache->size());
  std::vector<float> out(s.out_size());
  std::vector<float> row(static_cast<size_t>(B) * W);
  for (int pos = 0; pos < T; ++pos) {
    for (int b = 0; b < B; ++b) {
      const float* src = qkv.data() + (static_cast<size_t>(b) * T + pos) * W;
      std::copy(src, src + W, row.begin() + static_cast<std::ptrdiff_t>(b) * W);
    }
    auto step = poisoned(static_cast<size_t>(B) * C);
    attention_decode(step.data(), k_cache->data(), v_cache->data(), row.data(), B, pos, max_T, C,
                     s.NH, s.NKV);
    for (int b = 0; b < B; ++b) {
      std::copy(step.begin() + static_cast<std::ptrdiff_t>(b) * C,
                step.begin() + static_cast<std::ptrdiff_t>(b + 1) * C,
                out.begin() + (static_cast<std::ptrdiff_t>(b) * T + pos) * C);
    }
  }
  return out;
}

TEST(AttentionTest, DecodeMatchesReference) {
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(name(s));
    const int max_T = s.T + 3;
    const int KV = s.NKV * s.HS();
    const auto qkv = random_floats(s.qkv_size(), 61);
    std::vector<float> k_cache, v_cache;
    const auto out = decode_all(qkv, s, max_T, &k_cache, &v_cache);
    std::vector<double> out_ref, lse_ref;
    reference_attention(to_double(qkv), s, &out_ref, &lse_ref);
    EXPECT_TRUE(all_close(out, out_ref, 1e-4, 2e-5));
    // Rows 0..T-1 of the caches are the keys and values, copied; the rows after stay unwritten.
    for (int b = 0; b < s.B; ++b) {
      for (int t = 0; t < max_T; ++t) {
        for (int c = 0; c < KV; ++c) {
          const size_t at = (static_cast<size_t>(b) * max_T + t) * KV + c;
          const size_t row = (static_cast<size_t>(b) * s.T + t) * s.W();
          if (t < s.T) {
            ASSERT_EQ(k_cache[at], qkv[row + s.C + c]) << "k of (b, t, c) = " << b << ", " << t << ", " << c;
            ASSERT_EQ(v_cache[at], qkv[row + s.C + KV + c]) << "v of (b, t, c) = " << b << ", " << t << ", " << c;
          } else {
            ASSERT_TRUE(std::isnan(k_cache[at]) && std::isnan(v_cache[at])) << "row " << t << " written";
          }
        }
      }
    }
  }
}

TEST(AttentionTest, DecodeMatchesForwardRow) {
  for (const Shape& s : {Shape{2, 37, 24, 3, 3}, Shape{2, 37, 24, 3, 1}, Shape{2, 37, 32, 4, 2}}) {
    SCOPED_TRACE(name(s));
    const auto qkv = random_floats(s.qkv_size(), 51);
    std::vector<float> out(s.out_size()), lse(s.lse_size());
    attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.C, s.NH, s.NKV);
    std::vector<float> k_cache, v_cache;
    EXPECT_TRUE(all_close(decode_all(qkv, s, 40, &k_cache, &v_cache), out, 1e-6, 1e-7));
  }
}

TEST(AttentionTest, RejectsBadShapes) {
  std::vector<float> buf(3 * 2 * 12, 0.0f);
  float* p = buf.data();
  EXPECT_THROW(attention_forward(p, p, p, 1, 2, 10, 3, 3), loom::Error);  // 3 heads of 10
  EXPECT_THROW(attention_forward(p, p, p, 0, 2, 10, 2, 2), loom::Error);
  EXPECT_THROW(attention_forward(p, p, p, 1, 2, 12, 4, 3), loom::Error);  // 3 kv heads, 4 heads
  EXPECT_THROW(attention_forward(p, p, p, 1, 2, 12, 4, 0), loom::Error);
  EXPECT_THROW(attention_backward(p, p, p, p, p, 1, 2, 10, 4, 4), loom::Error);
  EXPECT_THROW(attention_backward(p, p, p, p, p, 1, 2, 12, 4, 8), loom::Error);  // NKV > NH
  EXPECT_THROW(attention_decode(p, p, p, p, 1, 2, 2, 10, 2, 2),
               loom::Error);  // position 2 of a 2-position cache
  EXPECT_THROW(attention_decode(p, p, p, p, 1, 0, 2, 10, 3, 3), loom::Error);
  EXPECT_THROW(attention_decode(p, p, p, p, 1, 0, 2, 12, 3, 2), loom::Error);
}

}  // namespace
}  // namespace loom::kernels::cpu
