// Token and position embeddings against a double-precision reference: forward with the whole
// vocabulary and with vocabulary shards (the shards' sum must be the whole lookup), positions of
// a row block that starts mid-batch, backward (analytic and finite differences) with many
// repeated tokens, accumulation, and thread independence of the backward.
#include "kernels/cpu/embedding.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "test_util.h"

namespace loom::kernels::cpu {
namespace {

using loom::testing::all_close;
using loom::testing::poisoned;
using loom::testing::random_floats;
using loom::testing::random_ints;

// Forward: copies and one fp32 addition, correctly rounded: rtol 1e-6 (> 2^-24), no atol.
// Backward: fp32 sums of up to N = 300 terms in [-1, 1]: rtol 1e-5, atol 1e-5.
constexpr double kForwardRtol = 1e-6;
constexpr double kBackwardRtol = 1e-5;
constexpr double kBackwardAtol = 1e-5;

struct Case {
  int N, T, C, V;
};
// V small relative to N forces many repeated tokens in the backward.
const Case kCases[] = {{1, 1, 1, 1}, {7, 7, 3, 5}, {21, 7, 33, 4}, {300, 75, 65, 3}, {32, 16, 130, 1000}};

// out[n] = wte[tokens[n]] + wpe[(first_row + n) % T], in double.
std::vector<double> reference(const std::vector<int32_t>& tokens, const std::vector<double>& wte,
                              const std::vector<double>& wpe, int N, int T, int C, int first_row) {
  std::vector<double> out(static_cast<size_t>(N) * C);
  for (int n = 0; n < N; ++n) {
    for (int c = 0; c < C; ++c) {
      out[static_cast<size_t>(n * C + c)] = wte[static_cast<size_t>(tokens[static_cast<size_t>(n)] * C + c)] +
                                            wpe[static_cast<size_t>(((first_row + n) % T) * C + c)];
    }
  }
  return out;
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

TEST(EmbeddingTest, ForwardMatchesDoubleReferenceWholeAndSharded) {
  for (const Case& s : kCases) {
    for (int first_row : {0, 5}) {
      SCOPED_TRACE(::testing::Message() << "N=" << s.N << " T=" << s.T << " C=" << s.C << " V=" << s.V
                                        << " first_row=" << first_row);
      std::vector<int32_t> tokens = random_ints(static_cast<size_t>(s.N), 1, 0, s.V);
      std::vector<float> wte = random_floats(static_cast<size_t>(s.V) * s.C, 2);
      std::vector<float> wpe = random_floats(static_cast<size_t>(s.T) * s.C, 3);
      const std::vector<double> want = reference(tokens, to_double(wte), to_double(wpe), s.N, s.T, s.C, first_row);

      std::vector<float> out = poisoned(static_cast<size_t>(s.N) * s.C);
      token_embedding_forward(out.data(), tokens.data(), wte.data(), s.N, s.C, 0, s.V);
      position_embedding_forward(out.data(), wpe.data(), s.N, s.T, s.C, first_row);
      EXPECT_TRUE(all_close(out, want, kForwardRtol, 0.0));

      // Three uneven shards of the vocabulary: each contributes its owned rows, zeros elsewhere.
      std::vector<double> sum(out.size(), 0.0);
      const int cuts[4] = {0, s.V / 3, (2 * s.V) / 3, s.V};
      for (int k = 0; k < 3; ++k) {
        const int start = cuts[k], count = cuts[k + 1] - cuts[k];
        if (count == 0) continue;
        std::vector<float> part = poisoned(out.size());
        token_embedding_forward(part.data(), tokens.data(), wte.data() + static_cast<long>(start) * s.C, s.N,
                                s.C, start, count);
        for (size_t i = 0; i < part.size(); ++i) sum[i] += part[i];
      }
      std::vector<float> positions_only(out.size(), 0.0f);
      position_embedding_forward(positions_only.data(), wpe.data(), s.N, s.T, s.C, first_row);
      for (size_t i = 0; i < sum.size(); ++i) sum[i] += positions_only[i];
      EXPECT_TRUE(all_close(sum, want, kForwardRtol, 0.0));
    }
  }
}

TEST(EmbeddingTest, BackwardMatchesAnalyticReferenceAndAccumulates) {
  for (const Case& s : kCases) {
    SCOPED_TRACE(::testing::Message() << "N=" << s.N << " T=" << s.T << " C=" << s.C << " V=" << s.V);
    const int first_row = 3, start = s.V / 2, count = s.V - s.V / 2;  // the upper half of the vocabulary
    std::vector<int32_t> tokens = random_ints(static_cast<size_t>(s.N), 6, 0, s.V);
    std::vector<float> dout = random_floats(static_cast<size_t>(s.N) * s.C, 7);
    // Random initial gradients: the kernels must add to them.
    std::vector<float> dwte = random_floats(static_cast<size_t>(count) * s.C, 8);
    std::vector<float> dwpe = random_floats(static_cast<size_t>(s.T) * s.C, 9);
    std::vector<double> dwte_expected = to_double(dwte), dwpe_expected = to_double(dwpe);
    for (int n = 0; n < s.N; ++n) {
      for (int c = 0; c < s.C; ++c) {
        const double d = dout[static_cast<size_t>(n * s.C + c)];
        const int local = tokens[static_cast<size_t>(n)] - start;
        if (local >= 0 && local < count) dwte_expected[static_cast<size_t>(local * s.C + c)] += d;
        dwpe_expected[static_cast<size_t>(((first_row + n) % s.T) * s.C + c)] += d;
      }
    }
    token_embedding_backward(dwte.data(), dout.data(), tokens.data(), s.N, s.C, start, count);
    position_embedding_backward(dwpe.data(), dout.data(), s.N, s.T, s.C, first_row);
    EXPECT_TRUE(all_close(dwte, dwte_expected, kBackwardRtol, kBackwardAtol));
    EXPECT_TRUE(all_close(dwpe, dwpe_expected, kBackwardRtol, kBackwardAtol));
  }
}

TEST(EmbeddingTest, BackwardMatchesFiniteDifferences) {
  // L = sum(out * R) with the double forward; central differences, h = 1e-3 (L is linear in
  // wte and wpe, so the difference is exact up to double rounding).
  const int N = 15, T = 5, C = 7, V = 4, first_row = 2;
  const double h = 1e-3;
  std::vector<int32_t> tokens = random_ints(N, 10, 0, V);
  std::vector<float> wte = random_floats(V * C, 11), wpe = random_floats(T * C, 12);
  std::vector<float> R = random_floats(N * C, 13);
  std::vector<float> dwte(V * C, 0.0f), dwpe(T * C, 0.0f);
  token_embedding_backward(dwte.data(), R.data(), tokens.data(), N, C, 0, V);
  position_embedding_backward(dwpe.data(), R.data(), N, T, C, first_row);

  std::vector<double> te = to_double(wte), pe = to_double(wpe);
  auto loss = [&] {
    std::vector<double> out = reference(tokens, te, pe, N, T, C, first_row);
    double L = 0;
    for (size_t i = 0; i < out.size(); ++i) L += out[i] * R[i];
    return L;
  };
  loom::testing::expect_finite_differences(te, dwte, loss, h, 2, kBackwardRtol, kBackwardAtol, "dwte");
  loom::testing::expect_finite_differences(pe, dwpe, loss, h, 2, kBackwardRtol, kBackwardAtol, "dwpe");
}

TEST(EmbeddingTest, BackwardDoesNotDependOnThreadCount) {
  // Few distinct tokens and a width of several column blocks: heavy contention if racy.
  const int N = 512, T = 64, C = 200, V = 3;
  std::vector<int32_t> tokens = random_ints(N, 14, 0, V);
  std::vector<float> dout = random_floats(static_cast<size_t>(N) * C, 15);
  const int saved = omp_get_max_threads();
  const int threads[3] = {1, 2, 3};
  std::vector<float> dwte[3], dwpe[3];
  for (int k = 0; k < 3; ++k) {
    omp_set_num_threads(threads[k]);
    dwte[k] = std::vector<float>(V * C, 0.5f);
    dwpe[k] = std::vector<float>(T * C, 0.5f);
    token_embedding_backward(dwte[k].data(), dout.data(), tokens.data(), N, C, 0, V);
    position_embedding_backward(dwpe[k].data(), dout.data(), N, T, C, 0);
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
