// The paired regions on real ranks: each forward computes what it says, and each backward is the
// adjoint of its forward: sum over ranks <forward(x), y> == sum over ranks <x, backward(y)>.
#include "parallel/regions.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "mpi_test_util.h"
#include "test_util.h"

namespace loom::parallel {
namespace {

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

double sum_over_ranks(Communicator& comm, double local) {
  float value = static_cast<float>(local), total = 0;
  comm.all_reduce(&value, &total, 1, DType::kF32, ReduceOp::kSum);
  return total;
}

uint32_t seed_of(int rank, int which) { return static_cast<uint32_t>(1000 * which + rank); }

TEST(RegionsMpiTest, CopyAndReduceAreConjugate) {
  Communicator& tp = testing::mpi_world();
  const size_t n = 37;
  std::vector<float> x = testing::random_floats(n, seed_of(tp.rank(), 1));
  std::vector<float> y = testing::random_floats(n, seed_of(tp.rank(), 2));

  // ReduceFromTensorParallel forward = sum over ranks.
  std::vector<float> fx = x;
  ReduceFromTensorParallel::forward(tp, fx.data(), n, DType::kF32);
  std::vector<float> expected(n, 0.0f);
  for (int r = 0; r < tp.size(); ++r) {
    std::vector<float> xr = testing::random_floats(n, seed_of(r, 1));
    for (size_t i = 0; i < n; ++i) expected[i] += xr[i];
  }
  EXPECT_TRUE(testing::all_close(fx, expected, 1e-6, 1e-6));

  // CopyToTensorParallel backward = sum over ranks of each rank's output gradient.
  std::vector<float> grad = y;
  CopyToTensorParallel::backward(tp, grad.data(), n, DType::kF32);
  std::vector<float> expected_grad(n, 0.0f);
  for (int r = 0; r < tp.size(); ++r) {
    std::vector<float> yr = testing::random_floats(n, seed_of(r, 2));
    for (size_t i = 0; i < n; ++i) expected_grad[i] += yr[i];
  }
  EXPECT_TRUE(testing::all_close(grad, expected_grad, 1e-6, 1e-6));

  // Adjoint: copy sends a replicated x to every rank; sum_r <x, y_r> == <x, backward(y)>.
  std::vector<float> x0 = testing::random_floats(n, seed_of(0, 1));
  const double lhs = sum_over_ranks(tp, dot(x0, y));
  const double rhs = dot(x0, grad);
  EXPECT_NEAR(lhs, rhs, 1e-4 * (1 + std::fabs(lhs)));
}

TEST(RegionsMpiTest, SequenceGatherAndScatterAreConjugate) {
  Communicator& tp = testing::mpi_world();
  const size_t rows = 5, C = 6, full_n = rows * C * static_cast<size_t>(tp.size());
  std::vector<float> local = testing::random_floats(rows * C, seed_of(tp.rank(), 3));
  std::vector<float> full(full_n, std::nanf(""));
  GatherFromSequenceParallel::forward(tp, local.data(), full.data(), rows, C, DType::kF32);
  for (int r = 0; r < tp.size(); ++r) {
    std::vector<float> block(full.begin() + static_cast<long>(r * rows * C),
                             full.begin() + static_cast<long>((r + 1) * rows * C));
    EXPECT_TRUE(testing::all_close(block, testing::random_floats(rows * C, seed_of(r, 3)), 0, 0))
        << "block of rank " << r;
  }
  // Adjoint: sum_r <gather(x), y_r> == sum_r <x_r, backward(y)_r>.
  std::vector<float> y = testing::random_floats(full_n, seed_of(tp.rank(), 4));
  std::vector<float> dlocal(rows * C, std::nanf(""));
  GatherFromSequenceParallel::backward(tp, y.data(), dlocal.data(), rows, C, DType::kF32);
  const double lhs = sum_over_ranks(tp, dot(full, y));
  const double rhs = sum_over_ranks(tp, dot(local, dlocal));
  EXPECT_NEAR(lhs, rhs, 1e-4 * (1 + std::fabs(lhs)));

  // Scatter is gather's transpose: forward reduce-scatter, backward all-gather.
  std::vector<float> partial = testing::random_floats(full_n, seed_of(tp.rank(), 5));
  std::vector<float> mine(rows * C, std::nanf(""));
  ScatterToSequenceParallel::forward(tp, partial.data(), mine.data(), rows, C, DType::kF32);
  std::vector<float> expected(rows * C, 0.0f);
  for (int r = 0; r < tp.size(); ++r) {
    std::vector<float> pr = testing::random_floats(full_n, seed_of(r, 5));
    for (size_t i = 0; i < rows * C; ++i) expected[i] += pr[static_cast<size_t>(tp.rank()) * rows * C + i];
  }
  EXPECT_TRUE(testing::all_close(mine, expected, 1e-5, 1e-6));
  std::vector<float> dmine = testing::random_floats(rows * C, seed_of(tp.rank(), 6));
  std::vector<float> dpartial(full_n, std::nanf(""));
  ScatterToSequenceParallel::backward(tp, dmine.data(), dpartial.data(), rows, C, DType::kF32);
  const double lhs2 = sum_over_ranks(tp, dot(mine, dmine));
  const double rhs2 = sum_over_ranks(tp, dot(partial, dpartial));
  EXPECT_NEAR(lhs2, rhs2, 1e-4 * (1 + std::fabs(lhs2)));
}

// bf16 activations pass through the regions: a sum of bf16 values that is exact in bf16 comes out
// exact, and a gather moves the bits.
TEST(RegionsMpiTest, RegionsMoveBf16) {
  Communicator& tp = testing::mpi_world();
  const size_t rows = 3, C = 4, n = rows * C * static_cast<size_t>(tp.size());
  std::vector<bf16> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = float_to_bf16(0.25f * static_cast<float>(i % 7) * static_cast<float>(tp.rank() + 1));
  std::vector<bf16> reduced = x;
  ReduceFromTensorParallel::forward(tp, reduced.data(), n, DType::kBF16);
  const float ranks = static_cast<float>(tp.size() * (tp.size() + 1) / 2);
  for (size_t i = 0; i < n; ++i) EXPECT_EQ(bf16_to_float(reduced[i]), 0.25f * static_cast<float>(i % 7) * ranks) << i;
  std::vector<bf16> full(n);
  GatherFromSequenceParallel::forward(tp, x.data() + static_cast<size_t>(tp.rank()) * rows * C, full.data(), rows, C,
                                      DType::kBF16);
  for (size_t i = 0; i < n; ++i) {
    const int owner = static_cast<int>(i / (rows * C));
    EXPECT_EQ(bf16_to_float(full[i]), 0.25f * static_cast<float>(i % 7) * static_cast<float>(owner + 1)) << i;
  }
}

// Each rank holds a slice of the vocabulary: the statistics equal those of the whole rows.
TEST(RegionsMpiTest, VocabParallelStatisticsAreThoseOfTheWholeVocabulary) {
  Communicator& tp = testing::mpi_world();
  const int N = 7, V_per_rank = 5, V = V_per_rank * tp.size();
  std::vector<float> all = testing::random_floats(static_cast<size_t>(N) * V, 77, -4.0f, 4.0f);  // (N, V)
  std::vector<float> row_max(N), sums(2 * static_cast<size_t>(N), 0.0f);
  for (int n = 0; n < N; ++n) {
    float m = -INFINITY;
    for (int v = tp.rank() * V_per_rank; v < (tp.rank() + 1) * V_per_rank; ++v) m = std::max(m, all[static_cast<size_t>(n * V + v)]);
    row_max[static_cast<size_t>(n)] = m;
  }
  VocabParallelStatistics::max(tp, row_max.data(), N);
  for (int n = 0; n < N; ++n) {
    float want = -INFINITY;
    for (int v = 0; v < V; ++v) want = std::max(want, all[static_cast<size_t>(n * V + v)]);
    EXPECT_EQ(row_max[static_cast<size_t>(n)], want) << "row " << n;
    for (int v = tp.rank() * V_per_rank; v < (tp.rank() + 1) * V_per_rank; ++v) {
      sums[static_cast<size_t>(n)] += std::exp(all[static_cast<size_t>(n * V + v)] - want);
    }
    // The target (column n % V) is held by one rank; the others count 0.
    const int target = n % V;
    if (target / V_per_rank == tp.rank()) sums[static_cast<size_t>(N + n)] = all[static_cast<size_t>(n * V + target)];
  }
  VocabParallelStatistics::sum(tp, sums.data(), sums.size());
  for (int n = 0; n < N; ++n) {
    double want = 0;
    for (int v = 0; v < V; ++v) want += std::exp(static_cast<double>(all[static_cast<size_t>(n * V + v)]) - row_max[static_cast<size_t>(n)]);
    EXPECT_NEAR(sums[static_cast<size_t>(n)], want, 1e-5 * want) << "sum of exps of row " << n;
    EXPECT_EQ(sums[static_cast<size_t>(N + n)], all[static_cast<size_t>(n * V + n % V)]) << "target logit of row " << n;
  }
}

// Partial gradients (sequence parallelism) and the two copies of a tied embedding sum to the whole.
TEST(RegionsMpiTest, GradientSumsAddEveryRanksPart) {
  Communicator& group = testing::mpi_world();
  const size_t n = 11;
  std::vector<float> want(n, 0.0f);
  for (int r = 0; r < group.size(); ++r) {
    std::vector<float> part = testing::random_floats(n, seed_of(r, 8));
    for (size_t i = 0; i < n; ++i) want[i] += part[i];
  }
  std::vector<float> grad = testing::random_floats(n, seed_of(group.rank(), 8));
  SequenceParallelGradients::sum(group, grad.data(), n);
  EXPECT_TRUE(testing::all_close(grad, want, 1e-5, 1e-6));
  std::vector<float> wte = testing::random_floats(n, seed_of(group.rank(), 8));
  TiedEmbeddingGradients::sum(group, wte.data(), n);
  EXPECT_EQ(wte, grad) << "the same sum over the same group";
}

}  // namespace
}  // namespace loom::parallel
