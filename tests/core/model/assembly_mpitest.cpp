// Whole-model assembly on real ranks: for every layout of the world (tensor parallel, pipeline
// parallel with uneven and empty stages, interleaved, with data-parallel replicas), the model
// rank 0 assembles from the shards is bitwise the one-rank model. The shards start from the
// one-rank weights (initialisation is layout-independent); the whole model on rank 0 starts as
// NaN, so that an element assembly does not write shows.
#include "core/model/assembly.h"

#include <algorithm>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/gpt.h"
#include "mpi_test_util.h"
#include "parallel/process_grid.h"
#include "test_util.h"

namespace loom {
namespace {

const GPTConfig kConfig{4, 12, 48, 53, 12};  // 53: vocabulary slices of unequal size
constexpr uint64_t kSeed = 5;

struct AssemblyCase {
  int tp, pp, chunks;
  std::vector<int> blocks;  // per virtual stage
};

void expect_every_layout_assembles_the_one_rank_model(const GPTConfig& config) {
  parallel::Communicator& world = testing::mpi_world();
  GPT reference(config);
  reference.init_weights(kSeed);
  const std::vector<AssemblyCase> cases = {
      {1, 1, 1, {4}},          {2, 1, 1, {4}},       {3, 1, 1, {4}},          {4, 1, 1, {4}},
      {1, 2, 1, {3, 1}},       {2, 2, 1, {2, 2}},    {1, 2, 2, {2, 1, 0, 1}}, {1, 3, 1, {2, 1, 1}},
      {1, 4, 1, {1, 1, 1, 1}}, {2, 4, 1, {0, 2, 1, 1}},
  };
  int layouts = 0;
  for (const AssemblyCase& c : cases) {
    if (world.size() % (c.tp * c.pp) != 0 || config.kv_heads() % c.tp != 0 || config.mlp_hidden() % c.tp != 0) continue;
    const int dp = world.size() / (c.tp * c.pp);
    SCOPED_TRACE(::testing::Message() << "tp=" << c.tp << " pp=" << c.pp << " dp=" << dp << " chunks=" << c.chunks);
    ++layouts;
    parallel::ProcessGrid grid(world, parallel::GridShape{c.tp, c.pp, dp});
    std::vector<std::unique_ptr<GPT>> owned;
    std::vector<GPT*> chunks;
    for (int chunk = 0; chunk < c.chunks; ++chunk) {
      ModelParallel layout = model_parallel_for(grid, c.blocks, /*sequence_parallel=*/false, chunk, c.chunks);
      layout.gradients = false;
      owned.push_back(std::make_unique<GPT>(config, layout));
      owned.back()->init_weights(kSeed);
      chunks.push_back(owned.back().get());
    }
    std::unique_ptr<GPT> whole;
    if (world.rank() == 0) {
      ModelParallel weights_only;
      weights_only.gradients = false;
      whole = std::make_unique<GPT>(config, weights_only);
      const Tensor arena = whole->parameter_arena();
      std::fill(arena.f32(), arena.f32() + arena.numel(), std::numeric_limits<float>::quiet_NaN());
    }
    assemble_whole_model(chunks, grid, c.blocks, whole.get());
    if (!whole) continue;
    ASSERT_EQ(whole->parameters().size(), reference.parameters().size());
    for (size_t i = 0; i < reference.parameters().size(); ++i) {
      const Parameter& want = reference.parameters()[i];
      const Parameter& got = whole->parameters()[i];
      ASSERT_EQ(got.name, want.name);
      const std::vector<float> got_values(got.value.f32(), got.value.f32() + got.value.numel());
      const std::vector<float> want_values(want.value.f32(), want.value.f32() + want.value.numel());
      EXPECT_TRUE(testing::bitwise_equal(got_values, want_values)) << want.name;
    }
  }
  EXPECT_GT(layouts, 0);
}

TEST(AssemblyMpiTest, EveryLayoutAssemblesTheOneRankModel) { expect_every_layout_assembles_the_one_rank_model(kConfig); }

// A Llama, untied (lm_head on the last stage, embed_tokens on the first only) and tied, with
// grouped-query attention (12 heads, 6 key/value heads: tp 1, 2 and 3).
TEST(AssemblyMpiTest, EveryLlamaLayoutAssemblesTheOneRankModel) {
  for (bool tied : {false, true}) {
    GPTConfig llama = kConfig;
    llama.family = Family::kLlama;
    llama.n_kv_head = 6;
    llama.intermediate_size = 36;
    llama.tie_embeddings = tied;
    SCOPED_TRACE(tied ? "tied" : "untied");
    expect_every_layout_assembles_the_one_rank_model(llama);
  }
}

TEST(AssemblyMpiTest, OnlyRankZeroReceivesTheWholeModel) {
  parallel::Communicator& world = testing::mpi_world();
  parallel::ProcessGrid grid(world, parallel::GridShape{1, 1, world.size()});
  ModelParallel layout = model_parallel_for(grid, {kConfig.n_layer}, false);
  layout.gradients = false;
  GPT chunk(kConfig, layout);
  GPT* const chunks[] = {&chunk};
  // Rank 0 without a model to fill (and every other rank with one) is a broken contract, found
  // before any collective starts.
  GPT other(kConfig);
  EXPECT_THROW(assemble_whole_model(chunks, grid, {kConfig.n_layer}, world.rank() == 0 ? nullptr : &other), Error);
}

}  // namespace
}  // namespace loom
