// Memory and communication accounting of the parallel layouts, on real ranks.
//
// Memory: each rank's parameters and gradients are the model's size / (tp x pp), and its
// optimizer state is 2 x size / (tp x pp x dp) (ZeRO-1): asserted within 5% for tp, pp <= 4.
// Communication: the bytes each group's communicator counted during one training step equal the
// analytical volume of docs/parallelism.md ("Communication volume"), asserted within 1% (they
// are equal).
#include <cmath>
#include <memory>
#include <vector>

#include "core/gpt.h"
#include "core/optimizer.h"
#include "core/train_step.h"
#include "mpi_test_util.h"
#include "parallel/process_grid.h"
#include "test_util.h"

namespace loom {
namespace {

using parallel::Communicator;

const GPTConfig kConfig{2, 8, 256, 1000, 64};

TEST(GptAccountingMpiTest, ParametersGradientsAndOptimizerStateFollowTheLayout) {
  Communicator& world = testing::mpi_world();
  // A small vocabulary, so that the stages that hold the embeddings (and the last stage's copy of
  // the tied wte, ~0.5% here) stay within the formula's 5%.
  const GPTConfig config{4, 8, 256, 64, 16};
  // tp up to 4: every rank keeps the replicated tensors whole (~0.2% x tp of this model), so at
  // larger tp a rank holds noticeably more than its share.
  for (int tp : {1, 2, 4}) {
    for (int pp : {1, 2, 4}) {
      if (world.size() % (tp * pp) != 0) continue;
      const int dp = world.size() / (tp * pp);
      parallel::ProcessGrid grid(world, parallel::GridShape{tp, pp, dp});
      GPT model(config, model_parallel_for(grid, even_block_split(config.n_layer, pp), false));
      AdamW optimizer(model, AdamWSettings{}, &grid.dp());
      const double total = static_cast<double>(GPT(config).num_parameters());
      const double share = total / (tp * pp);
      const double params = static_cast<double>(model.parameter_arena().numel());
      const double grads = static_cast<double>(model.gradient_arena().numel());
      const double state = 2.0 * static_cast<double>(optimizer.owned_elements());  // m and v
      SCOPED_TRACE(::testing::Message() << "tp=" << tp << " pp=" << pp << " dp=" << dp);
      EXPECT_NEAR(params / share, 1.0, 0.05) << params << " parameters on this rank";
      EXPECT_NEAR(grads / share, 1.0, 0.05) << grads << " gradients on this rank";
      EXPECT_NEAR(state / (2.0 * share / dp), 1.0, 0.05) << state << " optimizer state elements";
    }
  }
}

// Elements moved per optimizer step, by group (docs/parallelism.md).
double tp_volume(const GPTConfig& c, int tp, bool sp, int N, int accum) {
  if (tp == 1) return 0;
  const double L = c.n_layer, C = c.n_embd, NC = static_cast<double>(N) * C;
  const double per_micro = (sp ? NC * (8 * L + 4) : NC * (4 * L + 2)) + 3.0 * N;
  const double partial_grads = sp ? L * 4 * C + 2 * C + static_cast<double>(c.max_seq_len) * C : 0;
  return accum * per_micro + partial_grads + 1;  // + the gradient norm
}

double dp_volume(int64_t arena, int dp, int accum) {
  if (dp == 1) return 0;
  return 2.0 * accum + 2.0 * static_cast<double>(arena) + 1;  // counts and loss sums, reduce-scatter, all-gather, norm
}

TEST(GptAccountingMpiTest, BytesPerStepEqualTheAnalyticalVolume) {
  Communicator& world = testing::mpi_world();
  const int B = 2, T = 16, accum = 2, N = B * T;
  for (int tp : {1, 2, 4, 8}) {
    if (world.size() % tp != 0 || kConfig.n_head % tp != 0) continue;
    const int dp = world.size() / tp;
    parallel::ProcessGrid grid(world, parallel::GridShape{tp, 1, dp});
    for (bool sp : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "tp=" << tp << " dp=" << dp << " sequence_parallel=" << sp);
      GPT model(kConfig, ModelParallel{&grid.tp(), sp, dp});
      model.init_weights(1);
      AdamW optimizer(model, AdamWSettings{}, &grid.dp(), 1 << 16);
      std::vector<int32_t> tokens = testing::random_ints(static_cast<size_t>(N) * accum, 3, 0, kConfig.vocab_size);
      std::vector<MicroBatch> micro;
      for (int m = 0; m < accum; ++m) {
        micro.push_back(MicroBatch{tokens.data() + m * N, tokens.data() + m * N, B, T});
      }
      grid.tp().stats().reset();
      grid.dp().stats().reset();
      train_step(model, optimizer, micro, 1e-3f);
      const double tp_bytes = static_cast<double>(grid.tp().stats().total_bytes());
      const double dp_bytes = static_cast<double>(grid.dp().stats().total_bytes());
      const double tp_expected = 4 * tp_volume(kConfig, tp, sp, N, accum);
      const double dp_expected = 4 * dp_volume(model.gradient_arena().numel(), dp, accum);
      if (tp > 1) {
        EXPECT_NEAR(tp_bytes / tp_expected, 1.0, 0.01) << tp_bytes << " tp bytes, expected " << tp_expected;
      }
      if (dp > 1) {
        EXPECT_NEAR(dp_bytes / dp_expected, 1.0, 0.01) << dp_bytes << " dp bytes, expected " << dp_expected;
      }
    }
  }
}

}  // namespace
}  // namespace loom

namespace loom {
namespace {

// Pipeline traffic per step, per rank (docs/parallelism.md): per micro-batch and model chunk,
// one boundary buffer (rows x C) received and one sent in each direction the chunk's virtual
// stage has a neighbour, plus the loss broadcast and the gradient-norm all-reduce (one element
// each); the embedding group sums the tied wte's gradient (the rank's vocabulary rows x C) once
// per step. 1F1B (one chunk) and interleaved (two).
TEST(GptAccountingMpiTest, PipelineBytesPerStepEqualTheAnalyticalVolume) {
  Communicator& world = testing::mpi_world();
  const GPTConfig config{8, 8, 64, 101, 16};
  const int B = 2, T = 16, accum = 4;
  for (int pp : {2, 4}) {
    for (int tp : {1, 2}) {
      for (int chunks : {1, 2}) {
        if (world.size() % (pp * tp) != 0) continue;
        const int dp = world.size() / (pp * tp);
        parallel::ProcessGrid grid(world, parallel::GridShape{tp, pp, dp});
        SCOPED_TRACE(::testing::Message() << "tp=" << tp << " pp=" << pp << " dp=" << dp << " chunks=" << chunks);
        const std::vector<int> split = even_block_split(config.n_layer, pp * chunks);
        std::vector<std::unique_ptr<GPT>> models;
        std::vector<std::unique_ptr<AdamW>> optimizers;
        std::vector<GPT*> model_ptrs;
        std::vector<AdamW*> optimizer_ptrs;
        int neighbours = 0;
        bool holds_wte = false;
        for (int c = 0; c < chunks; ++c) {
          models.push_back(std::make_unique<GPT>(config, model_parallel_for(grid, split, false, c, chunks)));
          models.back()->init_weights(1);
          optimizers.push_back(std::make_unique<AdamW>(*models.back(), AdamWSettings{}, &grid.dp(), 1 << 14));
          model_ptrs.push_back(models.back().get());
          optimizer_ptrs.push_back(optimizers.back().get());
          neighbours += (models.back()->first_stage() ? 0 : 1) + (models.back()->last_stage() ? 0 : 1);
          holds_wte = holds_wte || models.back()->first_stage() || models.back()->last_stage();
        }
        std::vector<int32_t> tokens = testing::random_ints(static_cast<size_t>(B) * T * accum, 5, 0, config.vocab_size);
        std::vector<MicroBatch> micro;
        for (int m = 0; m < accum; ++m) micro.push_back(MicroBatch{tokens.data() + m * B * T, tokens.data() + m * B * T, B, T});
        grid.pp().stats().reset();
        grid.embedding().stats().reset();
        train_step(model_ptrs, optimizer_ptrs, micro, 1e-3f);
        const double boundary = static_cast<double>(B) * T * config.n_embd;
        const double expected_pp = 4.0 * (accum * 2 * neighbours * boundary + 1 + 1);
        EXPECT_NEAR(static_cast<double>(grid.pp().stats().total_bytes()) / expected_pp, 1.0, 0.01)
            << grid.pp().stats().total_bytes() << " pp bytes, expected " << expected_pp;
        const double expected_embedding = holds_wte ? 4.0 * models[0]->vocab_count() * config.n_embd : 0.0;
        EXPECT_EQ(static_cast<double>(grid.embedding().stats().total_bytes()), expected_embedding);
      }
    }
  }
}

}  // namespace
}  // namespace loom
