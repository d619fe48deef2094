// row_log_likelihoods (core/train_step.h) in every layout the world allows, against one rank.
//
// On one rank first: each row's log-likelihood equals a double-precision log-softmax of the
// whole model's logits, its greedy flag the argmax of those logits, and a micro-batch's rows sum
// to -evaluate_loss x its counted targets. Then for tp in {1, 2}, pp in {1, 2}, an interleaved
// pipeline of 2 chunks per stage, sequence parallelism off and on, the remaining ranks data
// parallel: the same initial weights (drawn at global indices) give every rank the one-rank rows,
// log-likelihoods within 1e-5 relative (the vocabulary is split unevenly: 53 over 2 ranks), the
// counts and greedy flags exactly. Micro-batches of two shapes, rows with no counted target.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include <gtest/gtest.h>

#include "core/gpt.h"
#include "core/train_step.h"
#include "mpi_test_util.h"
#include "parallel/process_grid.h"
#include "parallel/solo_communicator.h"

namespace loom {
namespace {

using parallel::Communicator;

const GPTConfig kConfig{4, 4, 32, 53, 12};  // odd vocabulary: uneven vocabulary shards

struct Batch {
  std::vector<int32_t> tokens, targets;
  MicroBatch micro() const { return MicroBatch{tokens.data(), targets.data(), B, T}; }
  int B = 0, T = 0;
};

// Row b counts the targets of positions [b, T - 1) (a continuation after a context of b
// tokens), so rows differ in count; with `empty_row` the last row counts none.
Batch make_batch(int B, int T, uint32_t seed, bool empty_row) {
  Batch batch;
  batch.B = B;
  batch.T = T;
  batch.tokens.resize(static_cast<size_t>(B) * T);
  batch.targets.assign(static_cast<size_t>(B) * T, -1);
  uint32_t x = seed;
  for (int32_t& t : batch.tokens) {
    x = x * 1664525u + 1013904223u;
    t = static_cast<int32_t>((x >> 8) % static_cast<uint32_t>(kConfig.vocab_size));
  }
  for (int b = 0; b < B; ++b) {
    if (empty_row && b == B - 1) continue;
    for (int t = b; t + 1 < T; ++t) {
      batch.targets[static_cast<size_t>(b) * T + t] = batch.tokens[static_cast<size_t>(b) * T + t + 1];
    }
  }
  return batch;
}

std::vector<Batch> make_batches() {
  std::vector<Batch> batches;
  batches.push_back(make_batch(3, 12, 11, /*empty_row=*/true));
  batches.push_back(make_batch(2, 7, 23, /*empty_row=*/false));
  return batches;
}

// The rows from the whole model's logits, in double precision.
std::vector<RowLikelihood> direct_rows(GPT& whole, const Batch& batch) {
  whole.forward(batch.tokens.data(), nullptr, batch.B, batch.T);
  const float* logits = whole.logits();
  const int V = kConfig.vocab_size;
  std::vector<RowLikelihood> rows(static_cast<size_t>(batch.B));
  for (int n = 0; n < batch.B * batch.T; ++n) {
    const int32_t target = batch.targets[static_cast<size_t>(n)];
    if (target < 0) continue;
    const float* x = logits + static_cast<int64_t>(n) * V;
    double max = x[0], sum = 0;
    int argmax = 0;
    for (int v = 0; v < V; ++v) {
      if (x[v] > max) {
        max = x[v];
        argmax = v;
      }
    }
    for (int v = 0; v < V; ++v) sum += std::exp(x[v] - max);
    RowLikelihood& row = rows[static_cast<size_t>(n / batch.T)];
    row.log_likelihood += x[target] - max - std::log(sum);
    ++row.count;
    row.greedy = row.greedy && argmax == target;
  }
  return rows;
}

void expect_rows_equal(const std::vector<RowLikelihood>& got, const std::vector<RowLikelihood>& want, double tolerance) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t r = 0; r < got.size(); ++r) {
    const double scale = std::max(1.0, std::fabs(want[r].log_likelihood));
    EXPECT_LE(std::fabs(got[r].log_likelihood - want[r].log_likelihood) / scale, tolerance)
        << "row " << r << ": got " << got[r].log_likelihood << " want " << want[r].log_likelihood;
    EXPECT_EQ(got[r].count, want[r].count) << "row " << r;
    EXPECT_EQ(got[r].greedy, want[r].greedy) << "row " << r;
  }
}

TEST(RowLogLikelihoods, OneRankMatchesTheLogitsAndEvaluateLoss) {
  GPT whole(kConfig);
  whole.init_weights(7);
  GPT* chunk = &whole;
  parallel::SoloCommunicator one_replica("dp");
  for (const Batch& batch : make_batches()) {
    const MicroBatch mb = batch.micro();
    const std::vector<RowLikelihood> got = row_log_likelihoods({&chunk, 1}, {&mb, 1});
    const std::vector<RowLikelihood> want = direct_rows(whole, batch);
    expect_rows_equal(got, want, 1e-6);
    double sum = 0;
    int count = 0;
    for (const RowLikelihood& row : got) {
      sum += row.log_likelihood;
      count += row.count;
    }
    const double loss = evaluate_loss({&chunk, 1}, one_replica, {&mb, 1});
    EXPECT_NEAR(-sum / count, loss, 1e-5 * loss) << "B=" << batch.B << " T=" << batch.T;
  }
  // A greedy row exists: the target set to each position's argmax.
  Batch greedy = make_batch(1, 12, 5, false);
  whole.forward(greedy.tokens.data(), nullptr, 1, 12);
  for (int t = 0; t < 12; ++t) {
    const float* x = whole.logits() + static_cast<int64_t>(t) * kConfig.vocab_size;
    int argmax = 0;
    for (int v = 1; v < kConfig.vocab_size; ++v) argmax = x[v] > x[argmax] ? v : argmax;
    if (greedy.targets[static_cast<size_t>(t)] >= 0) greedy.targets[static_cast<size_t>(t)] = argmax;
  }
  const MicroBatch mb = greedy.micro();
  EXPECT_TRUE(row_log_likelihoods({&chunk, 1}, {&mb, 1})[0].greedy);
}

TEST(RowLogLikelihoods, EveryLayoutMatchesOneRank) {
  GPT whole(kConfig);
  whole.init_weights(7);
  std::vector<RowLikelihood> want;
  for (const Batch& batch : make_batches()) {
    const std::vector<RowLikelihood> rows = direct_rows(whole, batch);
    want.insert(want.end(), rows.begin(), rows.end());
  }
  const std::vector<Batch> batches = make_batches();
  std::vector<MicroBatch> micro;
  for (const Batch& batch : batches) micro.push_back(batch.micro());
  testing::for_each_world_layout(kConfig.n_layer, [&](const testing::WorldLayout& l, parallel::ProcessGrid& grid,
                                                      const std::vector<int>& split) {
    std::vector<std::unique_ptr<GPT>> chunks;
    std::vector<GPT*> pointers;
    for (int k = 0; k < l.chunks; ++k) {
      ModelParallel layout = model_parallel_for(grid, split, l.sequence_parallel, k, l.chunks);
      layout.gradients = false;
      chunks.push_back(std::make_unique<GPT>(kConfig, layout));
      chunks.back()->init_weights(7);
      pointers.push_back(chunks.back().get());
    }
    expect_rows_equal(row_log_likelihoods(pointers, micro), want, 1e-5);
  });
}

}  // namespace
}  // namespace loom
