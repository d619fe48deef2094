// Matmul against a double-precision reference: forward with and without bias, backward (analytic
// and finite differences), accumulation, optional gradients; the tile grid; and bitwise equal
// results at 1, 2, 3 and 4 threads, at sizes of one tile and of several in every dimension.
#include "kernels/cpu/matmul.h"

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <utility>
#include <vector>

#include "core/base/check.h"
#include "test_util.h"

namespace loom::kernels::cpu {
namespace {

using loom::testing::all_close;
using loom::testing::poisoned;
using loom::testing::random_floats;

// fp32 dot products of length <= 520 with O(1) terms in [-1, 1]: absolute error ~sqrt(K) * 6e-8
// * |terms| (1.4e-6 at K = 520), so rtol 1e-5 with atol 1e-5 (values near zero) leaves a margin
// of ~7x.
constexpr double kRtol = 1e-5;
constexpr double kAtol = 1e-5;

struct Shape {
  int N, C, OC;
};
// The last two are also ThreadCountNeverChangesABit's: {37, 45, 131} is one tile per product,
// {300, 272, 520} two by two tiles.
const Shape kShapes[] = {{1, 1, 1},    {1, 3, 5},     {7, 3, 5},
                         {13, 33, 65}, {64, 129, 96}, {37, 45, 131},
                         {300, 272, 520}};

std::array<size_t, 3> dims(const Shape& s) {
  return {static_cast<size_t>(s.N), static_cast<size_t>(s.C), static_cast<size_t>(s.OC)};
}

// out (N, OC) = inp (N, C) @ weight^T + bias, in double.
std::vector<double> forward_ref(const std::vector<double>& inp, const std::vector<double>& weight,
                                const std::vector<double>* bias, int N, int C, int OC) {
  std::vector<double> out(static_cast<size_t>(N) * OC);
  for (int n = 0; n < N; ++n) {
    for (int o = 0; o < OC; ++o) {
      double acc = bias != nullptr ? (*bias)[o] : 0.0;
      for (int c = 0; c < C; ++c) acc += inp[n * C + c] * weight[o * C + c];
      out[n * OC + o] = acc;
    }
  }
  return out;
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

TEST(MatmulTest, ForwardMatchesDoubleReference) {
  for (const Shape& s : kShapes) {
    for (bool with_bias : {true, false}) {
      SCOPED_TRACE(::testing::Message() << "N=" << s.N << " C=" << s.C << " OC=" << s.OC
                                        << " bias=" << with_bias);
      auto [N, C, OC] = dims(s);
      std::vector<float> inp = random_floats(N * C, 1);
      std::vector<float> weight = random_floats(OC * C, 2);
      std::vector<float> bias = random_floats(OC, 3);
      std::vector<float> out = poisoned(N * OC);
      matmul_forward(out.data(), inp.data(), weight.data(), with_bias ? bias.data() : nullptr,
                     s.N, s.C, s.OC);
      std::vector<double> bias_d = to_double(bias);
      std::vector<double> expected = forward_ref(to_double(inp), to_double(weight),
                                                 with_bias ? &bias_d : nullptr, s.N, s.C, s.OC);
      EXPECT_TRUE(all_close(out, expected, kRtol, kAtol));
    }
  }
}

TEST(MatmulTest, BackwardMatchesAnalyticReferenceAndAccumulates) {
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "N=" << s.N << " C=" << s.C << " OC=" << s.OC);
    auto [N, C, OC] = dims(s);
    std::vector<float> inp = random_floats(N * C, 1);
    std::vector<float> weight = random_floats(OC * C, 2);
    std::vector<float> dout = random_floats(N * OC, 4);
    // Random initial gradients: the kernel must add to them.
    std::vector<float> dinp = random_floats(N * C, 5);
    std::vector<float> dweight = random_floats(OC * C, 6);
    std::vector<float> dbias = random_floats(OC, 7);
    std::vector<double> dinp_expected = to_double(dinp);
    std::vector<double> dweight_expected = to_double(dweight);
    std::vector<double> dbias_expected = to_double(dbias);
    for (size_t n = 0; n < N; ++n) {
      for (size_t o = 0; o < OC; ++o) {
        const double d = dout[n * OC + o];
        dbias_expected[o] += d;
        for (size_t c = 0; c < C; ++c) {
          dinp_expected[n * C + c] += d * weight[o * C + c];
          dweight_expected[o * C + c] += d * inp[n * C + c];
        }
      }
    }
    matmul_backward(dinp.data(), dweight.data(), dbias.data(), dout.data(), inp.data(),
                    weight.data(), s.N, s.C, s.OC);
    EXPECT_TRUE(all_close(dinp, dinp_expected, kRtol, kAtol));
    EXPECT_TRUE(all_close(dweight, dweight_expected, kRtol, kAtol));
    EXPECT_TRUE(all_close(dbias, dbias_expected, kRtol, kAtol));
  }
}

TEST(MatmulTest, BackwardMatchesFiniteDifferences) {
  // L = sum(out * R) with the double forward; central differences, h = 1e-4 (L is linear in each
  // parameter, so the difference is exact up to double rounding).
  const int N = 7, C = 33, OC = 65;
  const double h = 1e-4;
  std::vector<float> inp = random_floats(N * C, 11);
  std::vector<float> weight = random_floats(OC * C, 12);
  std::vector<float> bias = random_floats(OC, 13);
  std::vector<float> R = random_floats(N * OC, 14);
  std::vector<float> dinp(N * C, 0.0f), dweight(OC * C, 0.0f), dbias(OC, 0.0f);
  matmul_backward(dinp.data(), dweight.data(), dbias.data(), R.data(), inp.data(), weight.data(),
                  N, C, OC);

  std::vector<double> x = to_double(inp), w = to_double(weight), b = to_double(bias);
  auto loss = [&] {
    std::vector<double> out = forward_ref(x, w, &b, N, C, OC);
    double L = 0;
    for (size_t i = 0; i < out.size(); ++i) L += out[i] * R[i];
    return L;
  };
  loom::testing::expect_finite_differences(x, dinp, loss, h, 7, kRtol, kAtol, "dinp");
  loom::testing::expect_finite_differences(w, dweight, loss, h, 7, kRtol, kAtol, "dweight");
  loom::testing::expect_finite_differences(b, dbias, loss, h, 7, kRtol, kAtol, "dbias");
}

TEST(MatmulTest, NullGradientsAreSkipped) {
  const int N = 5, C = 9, OC = 17;
  std::vector<float> inp = random_floats(N * C, 21);
  std::vector<float> weight = random_floats(OC * C, 22);
  std::vector<float> dout = random_floats(N * OC, 23);
  std::vector<float> dinp_all(N * C, 0.0f), dweight_all(OC * C, 0.0f), dbias_all(OC, 0.0f);
  matmul_backward(dinp_all.data(), dweight_all.data(), dbias_all.data(), dout.data(), inp.data(),
                  weight.data(), N, C, OC);
  std::vector<float> dinp(N * C, 0.0f), dweight(OC * C, 0.0f), dbias(OC, 0.0f);
  // Only the wanted gradient is computed; the inputs it does not need may be null too.
  matmul_backward(dinp.data(), nullptr, nullptr, dout.data(), nullptr, weight.data(), N, C, OC);
  matmul_backward(nullptr, dweight.data(), nullptr, dout.data(), inp.data(), nullptr, N, C, OC);
  matmul_backward(nullptr, nullptr, dbias.data(), dout.data(), nullptr, nullptr, N, C, OC);
  EXPECT_EQ(dinp, dinp_all);
  EXPECT_EQ(dweight, dweight_all);
  EXPECT_EQ(dbias, dbias_all);
}

TEST(MatmulTest, RejectsBadArguments) {
  std::vector<float> a(4, 1.0f), b(4, 1.0f), c(4, 0.0f);
  EXPECT_THROW(matmul_forward(c.data(), a.data(), b.data(), nullptr, 0, 2, 2), loom::Error);
  EXPECT_THROW(matmul_forward(c.data(), nullptr, b.data(), nullptr, 2, 2, 2), loom::Error);
  EXPECT_THROW(matmul_backward(c.data(), nullptr, nullptr, a.data(), a.data(), nullptr, 2, 2, 2),
               loom::Error);
}

TEST(MatmulTest, TileGridIsFixedBySizesAndCoversTheOutput) {
  struct Case {
    int rows, cols;
    int64_t reduction;
    int row_parts, col_parts;
  };
  const Case cases[] = {
      {37, 131, 45, 1, 1},         // too small to split
      {300, 520, 272, 2, 2},       // the longer side halved first: columns, then rows
      {256, 768, 768, 1, 4},       // columns halved twice; the 256 rows stay whole
      {2048, 768, 256, 4, 1},      // 2048 > 1024 rows: 2 parts, then 4 to reach 4 tiles
      {256, 50257, 768, 1, 64},    // every column part <= 1024 wide: the vocabulary projection
      {256, 768, 50257, 1, 4},     // its dinp: 4 tiles, none split below 128 wide
      {128, 255, 1000000, 1, 1},   // no side reaches 2 x 128
      {512, 512, 4, 1, 1},         // halves of 256 x 512 x 4 = 2^19 multiply-adds: too little
      {512, 512, 8, 2, 1},         // ... 2^20 is enough once, on the rows (ties split rows)
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << "rows=" << c.rows << " cols=" << c.cols
                                      << " reduction=" << c.reduction);
    const MatmulTiles grid = matmul_tiles(c.rows, c.cols, c.reduction);
    EXPECT_EQ(grid.row_parts, c.row_parts);
    EXPECT_EQ(grid.col_parts, c.col_parts);
    for (auto [extent, parts] : {std::pair{c.rows, grid.row_parts}, {c.cols, grid.col_parts}}) {
      EXPECT_EQ(matmul_tile_start(extent, parts, 0), 0);
      EXPECT_EQ(matmul_tile_start(extent, parts, parts), extent);
      for (int i = 1; i < parts; ++i) {
        const int start = matmul_tile_start(extent, parts, i);
        EXPECT_EQ(start % 16, 0) << "part " << i;
        EXPECT_GT(start, matmul_tile_start(extent, parts, i - 1)) << "part " << i;
      }
    }
  }
  EXPECT_THROW(matmul_tiles(0, 5, 5), loom::Error);
}

// Forward (with bias) and backward (all three gradients, accumulating into random values) at 1,
// 2, 3 and 4 threads must agree to the bit, with 1 thread as the reference. Each shape is given
// with the tile grids that it must produce, so that a change of the grid cannot quietly leave the
// test with single tiles only.
TEST(MatmulTest, ThreadCountNeverChangesABit) {
  struct Case {
    Shape shape;
    int forward_tiles, dinp_tiles, dweight_tiles;
  };
  // {300, 272, 520}: every product is 2 x 2 tiles; {21, 50, 1100}: 1100 output columns are cut
  // for being longer than one tile may be, however little work the tiles hold.
  const Case cases[] = {{{37, 45, 131}, 1, 1, 1}, {{300, 272, 520}, 4, 4, 4},
                        {{21, 50, 1100}, 2, 1, 2}};
  for (const Case& c : cases) {
    const Shape& s = c.shape;
    SCOPED_TRACE(::testing::Message() << "N=" << s.N << " C=" << s.C << " OC=" << s.OC);
    EXPECT_EQ(matmul_tiles(s.N, s.OC, s.C).count(), c.forward_tiles);
    EXPECT_EQ(matmul_tiles(s.N, s.C, s.OC).count(), c.dinp_tiles);
    EXPECT_EQ(matmul_tiles(s.OC, s.C, s.N).count(), c.dweight_tiles);
    auto [N, C, OC] = dims(s);
    const std::vector<float> inp = random_floats(N * C, 41);
    const std::vector<float> weight = random_floats(OC * C, 42);
    const std::vector<float> bias = random_floats(OC, 43);
    const std::vector<float> dout = random_floats(N * OC, 44);
    struct Results {
      std::vector<float> out, dinp, dweight, dbias;
    };
    auto run = [&](int threads) {
      loom::testing::ScopedThreadCount scoped(threads);
      Results r{poisoned(N * OC), random_floats(N * C, 45), random_floats(OC * C, 46),
                random_floats(OC, 47)};
      matmul_forward(r.out.data(), inp.data(), weight.data(), bias.data(), s.N, s.C, s.OC);
      matmul_backward(r.dinp.data(), r.dweight.data(), r.dbias.data(), dout.data(), inp.data(),
                      weight.data(), s.N, s.C, s.OC);
      return r;
    };
    const Results one = run(1);
    for (int threads : {2, 3, 4}) {
      SCOPED_TRACE(::testing::Message() << threads << " threads against 1");
      const Results many = run(threads);
      EXPECT_TRUE(loom::testing::bitwise_equal(many.out, one.out)) << "out";
      EXPECT_TRUE(loom::testing::bitwise_equal(many.dinp, one.dinp)) << "dinp";
      EXPECT_TRUE(loom::testing::bitwise_equal(many.dweight, one.dweight)) << "dweight";
      EXPECT_TRUE(loom::testing::bitwise_equal(many.dbias, one.dbias)) << "dbias";
    }
  }
}

}  // namespace
}  // namespace loom::kernels::cpu
