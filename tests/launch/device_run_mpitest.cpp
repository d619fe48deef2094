// `loom train`'s model on the GPU in every layout: tensor (with sequence) parallel, pipeline
// (1F1B and interleaved) and data parallel on the ranks of this world, all sharing GPU 0 over the
// staged path (and, in a world of one, the groups over NCCL), against the same model on one rank
// of the same GPU, and that one against the CPU. Skipped without a GPU; scripts/gpu_check.sh
// runs it at 1, 2 and 4 ranks.
//
// Bounds. Layouts on the GPU against one rank on the GPU: the bounds of the CPU's bf16 layout
// test (tests/core/gpt_parallel_mpitest.cpp, EveryLayoutInBf16MatchesOneRankBf16): 2e-3 relative
// on each step's loss, 2e-2 on the final weights (a layout sums its f32 partials in another
// order; where that moves a master weight across a bf16 rounding boundary the compute copy
// differs by one unit, and AdamW moves a near-zero-gradient element by ~lr whatever its sign).
// One GPU rank against the CPU in fp32: the bound of the CPU's bf16-against-fp32 test
// (tests/core/gpt_bf16_test.cpp): 2% on every step's loss (bf16's unit roundoff is 2^-8 = 0.4%,
// and 10 steps of training do not compound it past a few of them).
#include "launch/device_run.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <vector>

#include <gtest/gtest.h>

#include "core/backend/cpu_backend.h"
#include "core/base/device.h"
#include "core/gpt.h"
#include "core/optimizer.h"
#include "core/train_step.h"
#include "mpi_test_util.h"
#include "parallel/process_grid.h"
#include "parallel/solo_communicator.h"
#include "test_util.h"

namespace loom {
namespace {

using parallel::Communicator;

// Head size 32 (the CUDA attention takes 32, 64 and 128); 4 heads split over tp = 2; 4 blocks over
// two stages or two chunks of two stages; a vocabulary that splits evenly (cuBLASLt wants 16-byte
// aligned rows).
const GPTConfig kConfig{4, 4, 128, 96, 16};

// The Llama twin: the same sizes, 2 key/value heads (tp 2 holds one each), SwiGLU 256 wide.
GPTConfig llama_config() {
  GPTConfig c = kConfig;
  c.family = Family::kLlama;
  c.n_kv_head = 2;
  c.intermediate_size = 256;
  return c;
}
constexpr int kB = 2, kT = 16, kAccum = 2, kSteps = 10;
const AdamWSettings kAdam{0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};

struct Layout {
  int tp = 1, pp = 1, chunks = 1;
  bool sp = false;
};

struct Result {
  std::vector<double> losses;
  std::vector<std::vector<float>> weights;  // by name order of the reference, gathered over tp
  std::vector<std::string> names;
};

// The global batch of step s: kAccum micro-batches of kB * dp sequences.
std::vector<int32_t> batch(int s, uint32_t salt, int dp) {
  // Both models of this file have kConfig's vocabulary.
  return testing::random_ints(static_cast<size_t>(kAccum * kB * dp * kT), 1000 * static_cast<uint32_t>(s) + salt, 0,
                              kConfig.vocab_size);
}

// Trains kSteps on this rank's part of `layout` (the grid's), on `run`'s GPU when given, else on
// a CpuBackend of `precision` as one rank, on the global batches of `replicas` data-parallel
// replicas: with the grid's dp = replicas each rank takes its kB rows of a micro-batch, with
// dp = 1 the rank takes all replicas x kB rows. Returns the losses and this rank's chunks'
// weights (whole tensors, gathered over tp on the host).
Result train(const GPTConfig& config, const parallel::ProcessGrid* grid, DeviceRun* run, const Layout& layout,
             Precision precision, int replicas) {
  const int dp = grid ? grid->shape().dp : 1;
  const int dp_rank = grid ? grid->coord().dp : 0;
  const int rows = kB * replicas / dp;  // of a micro-batch on this rank
  std::unique_ptr<CpuBackend> cpu;
  std::vector<std::unique_ptr<GPT>> models;
  std::vector<std::unique_ptr<AdamW>> optimizers;
  const std::vector<int> split = even_block_split(config.n_layer, layout.pp * layout.chunks);
  for (int c = 0; c < layout.chunks; ++c) {
    ModelParallel mp;
    if (grid) mp = model_parallel_for(*grid, split, layout.sp, c, layout.chunks);
    if (!cpu) cpu = std::make_unique<CpuBackend>(precision);
    mp.backend = cpu.get();
    if (run) mp = run->on_device(mp);
    models.push_back(std::make_unique<GPT>(config, mp));
    models.back()->init_weights(11);
    parallel::Communicator* dp_group = run ? &run->dp() : grid ? &grid->dp() : nullptr;
    optimizers.push_back(std::make_unique<AdamW>(*models.back(), kAdam, dp_group, 1000));
  }
  std::vector<GPT*> chunks;
  std::vector<AdamW*> opts;
  for (size_t c = 0; c < models.size(); ++c) {
    chunks.push_back(models[c].get());
    opts.push_back(optimizers[c].get());
  }
  Result result;
  for (int s = 0; s < kSteps; ++s) {
    const std::vector<int32_t> tokens = batch(s, 1, replicas), targets = batch(s, 2, replicas);
    std::vector<MicroBatch> micro;
    for (int a = 0; a < kAccum; ++a) {
      const size_t at = static_cast<size_t>((a * replicas * kB + dp_rank * rows) * kT);  // this rank's rows
      micro.push_back({tokens.data() + at, targets.data() + at, rows, kT});
    }
    result.losses.push_back(train_step(chunks, opts, micro, lr_at_step(s, kSteps, 3e-3f, 2, 0.1f)).loss);
  }
  for (GPT* g : chunks) {
    for (const Parameter& p : g->parameters()) {
      result.names.push_back(p.name);
      result.weights.push_back(gather_parameter(*g, p, grid ? &grid->tp() : nullptr));
    }
  }
  return result;
}

bool has_gpu() { return device_count() > 0; }

const std::vector<Layout> kLayouts = {{1, 1, 1, false}, {2, 1, 1, false}, {2, 1, 1, true}, {1, 2, 1, false},
                                      {1, 2, 2, false}, {2, 2, 1, true},  {2, 2, 2, false}};

// Every layout of the world against one rank of the global batch. `device`: on GPU 0 (through
// DeviceRun, with `transports`), else on the CPU backend in bf16 (the harness itself, checked
// where no GPU is).
void check_layouts(const GPTConfig& config, bool device, const Result& reference,
                   const std::function<Result(int)>& one_rank) {
  Communicator& world = testing::mpi_world();
  for (const Layout& l : kLayouts) {
    if (world.size() % (l.tp * l.pp) != 0) continue;
    const int dp = world.size() / (l.tp * l.pp);
    parallel::ProcessGrid grid(world, parallel::GridShape{l.tp, l.pp, dp});
    const Result want_run = dp == 1 ? Result{} : one_rank(dp);
    const Result& want_all = dp == 1 ? reference : want_run;
    // A world of one runs its groups over NCCL too (its one-rank communicators); more ranks share
    // GPU 0 over the staged path.
    std::vector<DeviceRun::Transport> transports = {DeviceRun::Transport::kAuto};
    if (device && world.size() == 1) transports.push_back(DeviceRun::Transport::kNccl);
    for (DeviceRun::Transport transport : transports) {
      SCOPED_TRACE(::testing::Message() << "tp=" << l.tp << " pp=" << l.pp << " chunks=" << l.chunks << " dp=" << dp
                                        << " sp=" << l.sp << " transport=" << static_cast<int>(transport));
      std::unique_ptr<DeviceRun> run = device ? DeviceRun::on_gpu(0, grid, transport) : nullptr;
      const Result got = train(config, &grid, run.get(), l, Precision::kBF16, dp);
      double worst = 0;
      for (int s = 0; s < kSteps; ++s) {
        const double want = want_all.losses[static_cast<size_t>(s)];
        const double rel = std::fabs(got.losses[static_cast<size_t>(s)] - want) / want;
        worst = std::max(worst, rel);
        EXPECT_LE(rel, 2e-3) << "step " << s << ": got " << got.losses[static_cast<size_t>(s)] << " want " << want;
      }
      std::vector<float> all_got, all_want;
      for (size_t i = 0; i < got.names.size(); ++i) {
        const auto at = std::find(want_all.names.begin(), want_all.names.end(), got.names[i]);
        ASSERT_NE(at, want_all.names.end()) << got.names[i];
        const std::vector<float>& want = want_all.weights[static_cast<size_t>(at - want_all.names.begin())];
        all_got.insert(all_got.end(), got.weights[i].begin(), got.weights[i].end());
        all_want.insert(all_want.end(), want.begin(), want.end());
      }
      const double weights = testing::relative_l2(all_got, all_want);
      EXPECT_LE(weights, 2e-2) << "final weights of this rank's chunks";
      if (world.rank() == 0 && device) {
        std::printf("GPU %s tp=%d pp=%d chunks=%d dp=%d sp=%d: worst loss difference %.3g, final weights %.3g (%s)\n",
                    config.llama() ? "llama" : "gpt2", l.tp, l.pp, l.chunks, dp, l.sp ? 1 : 0, worst, weights,
                    run->describe().c_str());
      }
    }
  }
}

// The harness on the CPU backend in bf16: the layouts it builds, the batches it splits and the
// weights it gathers agree there, so a failure on the GPU is the GPU's.
void expect_harness_holds_on_the_cpu(const GPTConfig& config) {
  auto one_rank = [&](int replicas) { return train(config, nullptr, nullptr, Layout{}, Precision::kBF16, replicas); };
  check_layouts(config, false, one_rank(1), one_rank);
}

TEST(DeviceRunMpiTest, TheLayoutHarnessHoldsOnTheCpuInBf16) { expect_harness_holds_on_the_cpu(kConfig); }
TEST(DeviceRunMpiTest, TheLlamaLayoutHarnessHoldsOnTheCpuInBf16) { expect_harness_holds_on_the_cpu(llama_config()); }

void expect_every_layout_on_the_gpu_matches_one_rank(const GPTConfig& config) {
  // One rank on the GPU: the reference (of the global batch of `replicas`); it must agree with
  // the CPU in fp32 too.
  parallel::SoloCommunicator solo_world("world");
  parallel::ProcessGrid one(solo_world, parallel::GridShape{1, 1, 1});
  auto one_gpu_rank = [&](int replicas) {
    std::unique_ptr<DeviceRun> alone = DeviceRun::on_gpu(0, one);
    return train(config, &one, alone.get(), Layout{}, Precision::kBF16, replicas);
  };
  const Result reference = one_gpu_rank(1);
  const Result fp32 = train(config, nullptr, nullptr, Layout{}, Precision::kF32, 1);
  for (int s = 0; s < kSteps; ++s) {
    const double rel = std::fabs(reference.losses[static_cast<size_t>(s)] - fp32.losses[static_cast<size_t>(s)]) /
                       fp32.losses[static_cast<size_t>(s)];
    EXPECT_LE(rel, 2e-2) << "step " << s << ": GPU " << reference.losses[static_cast<size_t>(s)] << ", CPU fp32 "
                         << fp32.losses[static_cast<size_t>(s)];
  }

  check_layouts(config, true, reference, one_gpu_rank);
}

TEST(DeviceRunMpiTest, EveryLayoutOnTheGpuMatchesOneRankOnTheGpu) {
  if (!has_gpu()) GTEST_SKIP() << "no GPU";
  expect_every_layout_on_the_gpu_matches_one_rank(kConfig);
}

TEST(DeviceRunMpiTest, EveryLlamaLayoutOnTheGpuMatchesOneRankOnTheGpu) {
  if (!has_gpu()) GTEST_SKIP() << "no GPU";
  expect_every_layout_on_the_gpu_matches_one_rank(llama_config());
}

}  // namespace
}  // namespace loom
