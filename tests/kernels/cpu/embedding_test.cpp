// Token + position embedding against a double-precision reference: forward, token id checks,
// backward (analytic and finite differences) with many repeated tokens, accumulation, and
// thread independence of the backward.
#include "kernels/cpu/embedding.h"

#include <gtest/gtest.h>
#include <omp.h>

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
using loom::testing::random_ints;

// Forward: one fp32 addition, correctly rounded, so rtol 1e-6 (> 2^-24) with no atol.
// Backward: fp32 sums of up to B*T = 300 terms in [-1, 1]: rtol 1e-5, atol 1e-5.
constexpr double kForwardRtol = 1e-6;
constexpr double kBackwardRtol = 1e-5;
constexpr double kBackwardAtol = 1e-5;

struct Shape {
  int B, T, C, V;
};
// V small relative to B*T forces many repeated tokens in the backward.
const Shape kShapes[] = {{1, 1, 1, 1}, {1, 7, 3, 5}, {3, 7, 33, 4}, {4, 75, 65, 3},
                         {2, 16, 130, 1000}};

std::vector<double> forward_ref(const std::vector<int32_t>& tokens, const std::vector<double>& wte,
                                const std::vector<double>& wpe, int B, int T, int C) {
  std::vector<double> out(static_cast<size_t>(B) * T * C);
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      const int id = tokens[b * T + t];
      for (int c = 0; c < C; ++c) {
        out[(b * T + t) * C + c] = wte[id * C + c] + wpe[t * C + c];
      }
    }
  }
  return out;
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

TEST(EmbeddingTest, ForwardMatchesDoubleReference) {
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "B=" << s.B << " T=" << s.T << " C=" << s.C
                                      << " V=" << s.V);
    const size_t BT = static_cast<size_t>(s.B) * s.T;
    std::vector<int32_t> tokens = random_ints(BT, 1, 0, s.V);
    std::vector<float> wte = random_floats(static_cast<size_t>(s.V) * s.C, 2);
    // wpe has more rows than T: only the first T are read.
    std::vector<float> wpe = random_floats(static_cast<size_t>(s.T + 3) * s.C, 3);
    std::vector<float> out = poisoned(BT * s.C);
    embedding_forward(out.data(), tokens.data(), wte.data(), wpe.data(), s.B, s.T, s.C, s.V);
    std::vector<double> expected =
        forward_ref(tokens, to_double(wte), to_double(wpe), s.B, s.T, s.C);
    EXPECT_TRUE(all_close(out, expected, kForwardRtol, 0.0));
  }
}

TEST(EmbeddingTest, ForwardRejectsTokenOutsideVocabulary) {
  const int B = 2, T = 3, C = 4, V = 10;
  std::vector<float> wte = random_floats(V * C, 4), wpe = random_floats(T * C, 5);
  std::vector<float> out(B * T * C);
  for (int32_t bad : {V, -1}) {
    SCOPED_TRACE(::testing::Message() << "bad id " << bad);
    std::vector<int32_t> tokens = {0, 1, 2, 3, bad, 5};  // the bad id sits at (b, t) = (1, 1)
    try {
      embedding_forward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C, V);
      ADD_FAILURE() << "no loom::Error thrown";
    } catch (const loom::Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("token id " + std::to_string(bad)), std::string::npos) << message;
      EXPECT_NE(message.find("(b, t) = (1, 1)"), std::string::npos) << message;
      EXPECT_NE(message.find("V = " + std::to_string(V)), std::string::npos) << message;
    }
  }
}

TEST(EmbeddingTest, BackwardMatchesAnalyticReferenceAndAccumulates) {
  for (const Shape& s : kShapes) {
    for (bool with_dwpe : {true, false}) {
      SCOPED_TRACE(::testing::Message() << "B=" << s.B << " T=" << s.T << " C=" << s.C
                                        << " V=" << s.V << " dwpe=" << with_dwpe);
      const int B = s.B, T = s.T, C = s.C;
      const size_t BT = static_cast<size_t>(B) * T;
      std::vector<int32_t> tokens = random_ints(BT, 6, 0, s.V);
      std::vector<float> dout = random_floats(BT * C, 7);
      // Random initial gradients (wpe with extra rows, which must stay untouched).
      std::vector<float> dwte = random_floats(static_cast<size_t>(s.V) * C, 8);
      std::vector<float> dwpe = random_floats(static_cast<size_t>(T + 2) * C, 9);
      std::vector<double> dwte_expected = to_double(dwte);
      std::vector<double> dwpe_expected = to_double(dwpe);
      for (int b = 0; b < B; ++b) {
        for (int t = 0; t < T; ++t) {
          for (int c = 0; c < C; ++c) {
            const double d = dout[(b * T + t) * C + c];
            dwte_expected[tokens[b * T + t] * C + c] += d;
            if (with_dwpe) dwpe_expected[t * C + c] += d;
          }
        }
      }
      embedding_backward(dwte.data(), with_dwpe ? dwpe.data() : nullptr, dout.data(),
                         tokens.data(), B, T, C);
      EXPECT_TRUE(all_close(dwte, dwte_expected, kBackwardRtol, kBackwardAtol));
      EXPECT_TRUE(all_close(dwpe, dwpe_expected, kBackwardRtol, kBackwardAtol));
    }
  }
}

TEST(EmbeddingTest, BackwardMatchesFiniteDifferences) {
  // L = sum(out * R) with the double forward; central differences, h = 1e-3 (L is linear in
  // wte and wpe, so the difference is exact up to double rounding).
  const int B = 3, T = 5, C = 7, V = 4;
  const double h = 1e-3;
  std::vector<int32_t> tokens = random_ints(B * T, 10, 0, V);
  std::vector<float> wte = random_floats(V * C, 11), wpe = random_floats(T * C, 12);
  std::vector<float> R = random_floats(B * T * C, 13);
  std::vector<float> dwte(V * C, 0.0f), dwpe(T * C, 0.0f);
  embedding_backward(dwte.data(), dwpe.data(), R.data(), tokens.data(), B, T, C);

  std::vector<double> te = to_double(wte), pe = to_double(wpe);
  auto loss = [&] {
    std::vector<double> out = forward_ref(tokens, te, pe, B, T, C);
    double L = 0;
    for (size_t i = 0; i < out.size(); ++i) L += out[i] * R[i];
    return L;
  };
  loom::testing::expect_finite_differences(te, dwte, loss, h, 2, kBackwardRtol, kBackwardAtol, "dwte");
  loom::testing::expect_finite_differences(pe, dwpe, loss, h, 2, kBackwardRtol, kBackwardAtol, "dwpe");
}

TEST(EmbeddingTest, BackwardDoesNotDependOnThreadCount) {
  // Few distinct tokens and a width of several column blocks: heavy contention if racy.
  const int B = 8, T = 64, C = 200, V = 3;
  std::vector<int32_t> tokens = random_ints(B * T, 14, 0, V);
  std::vector<float> dout = random_floats(B * T * C, 15);
  const int saved = omp_get_max_threads();
  const int threads[3] = {1, 2, 3};
  std::vector<float> dwte[3], dwpe[3];
  for (int k = 0; k < 3; ++k) {
    omp_set_num_threads(threads[k]);
    dwte[k] = std::vector<float>(V * C, 0.5f);
    dwpe[k] = std::vector<float>(T * C, 0.5f);
    embedding_backward(dwte[k].data(), dwpe[k].data(), dout.data(), tokens.data(), B, T, C);
  }
  omp_set_num_threads(saved);
  for (int k = 1; k < 3; ++k) {
    SCOPED_TRACE(::testing::Message() << threads[k] << " threads vs 1");
    EXPECT_EQ(0, std::memcmp(dwte[0].data(), dwte[k].data(), sizeof(float) * dwte[0].size()));
    EXPECT_EQ(0, std::memcmp(dwpe[0].data(), dwpe[k].data(), sizeof(float) * dwpe[0].size()));
  }
}

}  // namespace
}  // namespace loom::kernels::cpu
