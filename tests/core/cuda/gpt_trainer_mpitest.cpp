// Data-parallel GPU training against one GPU with the whole batch: each rank trains on its
// micro-batch and the gradients are summed over (a) MPI staged through host memory, the path for
// ranks that share a GPU, and (b) NCCL where every rank has a GPU of its own. The reference is a
// one-GPU trainer that runs all ranks' micro-batches as gradient accumulation, so both see the
// same shapes and the same kernels: the first loss is bitwise equal, later ones differ only by the
// order in which fp32 gradient sums are added (then rounded into bf16 weights).
// Skipped without a GPU; built only with CUDA.
#ifdef LOOM_HAS_CUDA
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "core/base/cuda/context.h"
#include "core/base/device.h"
#include "core/cuda/gpt_trainer.h"
#include "core/gpt.h"
#include "mpi_test_util.h"
#include "parallel/nccl_communicator.h"
#include "parallel/staged_communicator.h"

namespace loom::cuda {
namespace {

using parallel::Communicator;

constexpr int kB = 2, kT = 64;
GPTConfig tiny() { return GPTConfig{2, 4, 128, 100, 64}; }

bool any_rank(Communicator& world, bool local) {
  int32_t flag = local ? 1 : 0;
  world.all_reduce(&flag, &flag, 1, DType::kI32, parallel::ReduceOp::kMax);
  return flag != 0;
}

struct Batch {
  std::vector<int32_t> tokens, targets;
};

// Rank r's micro-batch of step s (every rank can make every rank's).
Batch batch_of(int step, int rank, int V) {
  Batch b;
  for (int row = 0; row < kB; ++row) {
    const int stride = 1 + (row + rank + step) % 5;
    for (int t = 0; t <= kT; ++t) {
      const int id = (rank * 17 + row * 13 + step * 3 + t * stride) % V;
      if (t < kT) b.tokens.push_back(id);
      if (t > 0) b.targets.push_back(id);
    }
  }
  if (rank == 0) b.targets[3] = -1;  // unequal counts over ranks
  return b;
}

void expect_data_parallel_equals_accumulation(Context& context, Communicator& world, Communicator& dp_device) {
  const GPTConfig config = tiny();
  GPT host_model(config);
  host_model.init_weights(21);
  GPTTrainer replica(context, config, {}, kB, kT, &world, &dp_device);
  GPTTrainer whole(context, config, {}, kB, kT);
  replica.load_weights(host_model);
  whole.load_weights(host_model);
  for (int step = 0; step < 5; ++step) {
    std::vector<Batch> all;
    for (int r = 0; r < world.size(); ++r) all.push_back(batch_of(step, r, config.vocab_size));
    std::vector<MicroBatch> micro;
    for (const Batch& b : all) micro.push_back({b.tokens.data(), b.targets.data(), kB, kT});
    const StepResult want = whole.step(micro, 1e-3f);
    const StepResult got = replica.step(std::span<const MicroBatch>(&micro[static_cast<size_t>(world.rank())], 1), 1e-3f);
    if (step == 0) {
      EXPECT_EQ(got.loss, want.loss);
    } else {
      EXPECT_NEAR(got.loss, want.loss, 2e-3 * want.loss) << "step " << step;
    }
    EXPECT_NEAR(got.grad_norm, want.grad_norm, 1e-3 * want.grad_norm) << "step " << step;
  }
}

TEST(GptTrainerDataParallelTest, ReplicasOverMpiStagedThroughTheHostEqualOneGpu) {
  Communicator& world = testing::mpi_world();
  if (any_rank(world, device_count() == 0)) GTEST_SKIP() << "no GPU on some rank";
  Context context(world.rank() % device_count());
  parallel::StagedCommunicator staged(world, context.stream());
  expect_data_parallel_equals_accumulation(context, world, staged);
}

TEST(GptTrainerDataParallelTest, ReplicasOverNcclEqualOneGpu) {
  Communicator& world = testing::mpi_world();
  if (any_rank(world, device_count() < world.size())) GTEST_SKIP() << "fewer GPUs than ranks: NCCL needs one each";
  Context context(world.rank());
  std::unique_ptr<parallel::NcclCommunicator> nccl =
      parallel::NcclCommunicator::create(world, context.device(), context.stream(), "dp");
  expect_data_parallel_equals_accumulation(context, world, *nccl);
}

}  // namespace
}  // namespace loom::cuda
#endif  // LOOM_HAS_CUDA
