// Resharding on load: a checkpoint saved in one (tp, pp, dp) layout resumes in another, optimizer
// state included, with no conversion step.
//
// Every rank first trains the single-rank model for 20 steps (the reference). Then for each pair
// of layouts that fits the world: the first ranks train 10 steps in the saving layout and save;
// the first ranks of the loading layout build a model with *different* initial weights, resume
// from the checkpoint, and train steps 11..20. Each continued loss must be within 1e-5 relative
// of the reference's, and the final weights (gathered) within 1e-5 over all parameters. The
// layouts: tp=2 x pp=2 <-> dp=4, tp=2 x pp=2 <-> tp=4 x dp=2 (sequence parallel), and an
// interleaved pipeline (2 ranks x 2 chunks, dp=2) -> tp=2 x pp=2. The
// optimizer's bucket size is small, so the ZeRO-1 slices cut tensors mid-row and the stored
// rectangles are partial rows as well as whole blocks.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "checkpoints/checkpoint.h"
#include "core/config.h"
#include "core/optimizer.h"
#include "core/train_step.h"
#include "mpi_test_util.h"
#include "parallel/process_grid.h"
#include "test_util.h"

namespace loom {
namespace {

using parallel::Communicator;

const GPTConfig kConfig{4, 4, 32, 29, 8};  // 29: uneven vocabulary shards under tp = 2 and 4
constexpr int kT = 8, kGlobalB = 8, kAccum = 2, kSteps = 20, kSaveAt = 10;
const AdamWSettings kSettings{0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};

struct Layout {
  int tp, pp, dp;
  bool sp;
  int chunks = 1;  // model chunks per pipeline rank (interleaved when > 1)
  int world() const { return tp * pp * dp; }
};

std::string str(const Layout& l) {
  return "tp=" + std::to_string(l.tp) + " pp=" + std::to_string(l.pp) + " dp=" + std::to_string(l.dp) +
         (l.chunks > 1 ? " x " + std::to_string(l.chunks) + " chunks" : "") + (l.sp ? " (sequence parallel)" : "");
}

// The same global batches for every layout; each replica takes its rows.
struct Data {
  std::vector<int32_t> tokens = testing::random_ints(static_cast<size_t>(kSteps) * kAccum * kGlobalB * kT, 41, 0,
                                                     kConfig.vocab_size);
  std::vector<int32_t> targets = testing::random_ints(tokens.size(), 42, 0, kConfig.vocab_size);
  std::vector<MicroBatch> step(int step, int replica, int replicas) const {
    std::vector<MicroBatch> micro;
    const int B = kGlobalB / replicas;
    for (int m = 0; m < kAccum; ++m) {
      const size_t at = ((static_cast<size_t>(step) * kAccum + m) * kGlobalB + static_cast<size_t>(replica) * B) * kT;
      micro.push_back(MicroBatch{tokens.data() + at, targets.data() + at, B, kT});
    }
    return micro;
  }
};

float lr_of(int step) { return lr_at_step(step, kSteps, 3e-3f, 3, 0.1f); }

config::RunConfig run_config(const Layout& l) {
  config::RunConfig cfg;
  cfg.mutable_model()->set_n_layer(kConfig.n_layer);
  cfg.mutable_model()->set_n_head(kConfig.n_head);
  cfg.mutable_model()->set_n_embd(kConfig.n_embd);
  cfg.mutable_model()->set_vocab_size(kConfig.vocab_size);
  cfg.mutable_model()->set_seq_len(kConfig.max_seq_len);
  cfg.mutable_parallel()->set_tp(l.tp);
  cfg.mutable_parallel()->set_pp(l.pp);
  cfg.mutable_parallel()->set_dp(l.dp);
  cfg.mutable_parallel()->set_virtual_stages(l.chunks);
  return cfg;
}

// This rank's part of a layout: its model chunks and their optimizers.
struct LayoutRun {
  parallel::ProcessGrid grid;
  std::vector<std::unique_ptr<GPT>> models;
  std::vector<std::unique_ptr<AdamW>> optimizers;
  std::vector<GPT*> chunks;
  std::vector<AdamW*> opts;
  LayoutRun(Communicator& group, const Layout& l, uint64_t seed)
      : grid(group, parallel::GridShape{l.tp, l.pp, l.dp}) {
    const std::vector<int> split = even_block_split(kConfig.n_layer, l.pp * l.chunks);
    for (int c = 0; c < l.chunks; ++c) {
      models.push_back(std::make_unique<GPT>(kConfig, model_parallel_for(grid, split, l.sp, c, l.chunks)));
      models.back()->init_weights(seed);
      optimizers.push_back(std::make_unique<AdamW>(*models.back(), kSettings, &grid.dp(), /*bucket_elements=*/1000));
      chunks.push_back(models.back().get());
      opts.push_back(optimizers.back().get());
    }
  }
  float step(const Data& data, int step) {
    const std::vector<MicroBatch> micro = data.step(step, grid.coord().dp, grid.shape().dp);
    const StepResult r = train_step(chunks, opts, micro, lr_of(step));
    EXPECT_TRUE(r.updated);
    return static_cast<float>(r.loss);
  }
};

struct Reference {
  std::vector<float> losses;
  std::unique_ptr<GPT> model;
};

Reference reference_run(const Data& data) {
  Reference ref;
  ref.model = std::make_unique<GPT>(kConfig);
  ref.model->init_weights(5);
  AdamW opt(*ref.model, kSettings);
  for (int s = 0; s < kSteps; ++s) {
    ref.losses.push_back(static_cast<float>(train_step(*ref.model, opt, data.step(s, 0, 1), lr_of(s)).loss));
  }
  return ref;
}

TEST(CheckpointMpiTest, ResumesInAnyLayoutWithTheLossesOfAnUninterruptedRun) {
  Communicator& world = testing::mpi_world();
  if (world.size() != 4 && world.size() != 8) GTEST_SKIP() << "runs with 4 and 8 ranks";
  const Data data;
  const Reference ref = reference_run(data);
  // A directory every rank sees: rank 0's, named by its pid.
  int32_t pid = static_cast<int32_t>(::getpid());
  world.broadcast(&pid, 1, DType::kI32, 0);
  const std::string root_base = (std::filesystem::temp_directory_path() / ("loom_reshard_" + std::to_string(pid))).string();

  const Layout tp2pp2{2, 2, 1, false}, dp4{1, 1, 4, false}, tp4dp2{4, 1, 2, true};
  const Layout interleaved{1, 2, 2, false, 2};  // 2 pipeline ranks x 2 chunks, 2 replicas
  const std::vector<std::pair<Layout, Layout>> cases = {
      {tp2pp2, dp4}, {dp4, tp2pp2}, {tp2pp2, tp4dp2}, {tp4dp2, tp2pp2}, {interleaved, tp2pp2}};
  int index = 0;
  for (const auto& [save, load] : cases) {
    if (save.world() > world.size() || load.world() > world.size()) continue;
    SCOPED_TRACE("saved under " + str(save) + ", resumed under " + str(load));
    const std::string root = root_base + "_" + std::to_string(index++);
    {
      std::unique_ptr<Communicator> group = world.split(world.rank() < save.world() ? 0 : 1, world.rank(), "save");
      if (world.rank() < save.world()) {
        LayoutRun run(*group, save, 5);
        for (int s = 0; s < kSaveAt; ++s) {
          const float loss = run.step(data, s);
          EXPECT_LE(std::fabs(loss - ref.losses[static_cast<size_t>(s)]) / ref.losses[static_cast<size_t>(s)], 1e-5)
              << "step " << s + 1 << " before the save";
        }
        checkpoint::Checkpointer saver(checkpoint::Policy{root, 3, 0, true, 60}, *group);
        checkpoint::Progress progress;
        progress.step = kSaveAt;
        saver.save(run_config(save), progress, run.chunks, run.opts);
        saver.wait();
      }
    }
    world.barrier();  // the checkpoint is committed before anyone loads it
    {
      std::unique_ptr<Communicator> group = world.split(world.rank() < load.world() ? 0 : 1, world.rank(), "load");
      if (world.rank() < load.world()) {
        LayoutRun run(*group, load, /*different initial weights*/ 77);
        std::vector<std::string> warnings;
        const checkpoint::Resumed resumed =
            checkpoint::resume("auto", root, run_config(load), *group, run.chunks, run.opts,
                               [&](const std::string& w) { warnings.push_back(w); });
        ASSERT_TRUE(resumed.resumed);
        EXPECT_TRUE(warnings.empty());
        EXPECT_EQ(resumed.progress.step, kSaveAt);
        EXPECT_EQ(resumed.header.layout().tp(), save.tp);
        EXPECT_EQ(run.opts[0]->step_count(), kSaveAt);
        for (int s = kSaveAt; s < kSteps; ++s) {
          const float loss = run.step(data, s);
          EXPECT_LE(std::fabs(loss - ref.losses[static_cast<size_t>(s)]) / ref.losses[static_cast<size_t>(s)], 1e-5)
              << "step " << s + 1 << " after resuming: got " << loss << " want " << ref.losses[static_cast<size_t>(s)];
        }
        std::vector<float> got, want;
        for (GPT* chunk : run.chunks) {
          for (const Parameter& p : chunk->parameters()) {
            const std::vector<float> g = gather_parameter(*chunk, p);
            const Parameter& r = ref.model->parameter(p.name);
            got.insert(got.end(), g.begin(), g.end());
            want.insert(want.end(), r.value.f32(), r.value.f32() + r.value.numel());
          }
        }
        EXPECT_LE(testing::relative_l2(got, want), 1e-5) << "final weights of this rank's stage";
      }
    }
    world.barrier();
    if (world.rank() == 0) std::filesystem::remove_all(root);
  }
}

}  // namespace
}  // namespace loom
