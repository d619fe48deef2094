// The whole model at different thread counts: GPT trained with AdamW (clipping, weight decay) for
// a few steps at 1, 2, 3 and 4 OpenMP threads must give bitwise identical losses, gradient norms
// and final weights, so that a run resumed on a host with another core count continues exactly.
// The sizes make every matmul of the model several tiles (the test checks that), so a
// thread-dependent summation anywhere in the step shows up here.
#include <iomanip>
#include <vector>

#include "core/gpt.h"
#include "core/optimizer.h"
#include "core/train_step.h"
#include "kernels/cpu/matmul.h"
#include "test_util.h"

namespace loom {
namespace {

// Odd vocabulary (its projection is cut into uneven column tiles). B * T = 520 rows: a threaded
// OpenBLAS sgemm blocks a reduction of 520 (dweight's) differently from a single-threaded one, so
// this test failed before the matmul was tiled.
const GPTConfig kConfig{2, 4, 256, 301, 65};
constexpr int kB = 8, kT = 65, kAccum = 1, kSteps = 3;

struct TrainingRun {
  std::vector<double> losses, grad_norms;
  std::vector<std::vector<float>> weights;  // in parameters() order
};

TrainingRun train(int threads) {
  testing::ScopedThreadCount scoped(threads);
  GPT model(kConfig);
  model.init_weights(7);
  AdamW optimizer(model, AdamWSettings{0.9f, 0.95f, 1e-8f, 0.1f, 1.0f});
  const size_t per_micro = static_cast<size_t>(kB) * kT;
  const std::vector<int32_t> tokens =
      testing::random_ints(per_micro * kAccum * kSteps, 11, 0, kConfig.vocab_size);
  std::vector<int32_t> targets = testing::random_ints(tokens.size(), 12, 0, kConfig.vocab_size);
  for (size_t i = 0; i < targets.size(); i += 5) targets[i] = -1;
  TrainingRun run;
  for (int step = 0; step < kSteps; ++step) {
    std::vector<MicroBatch> micro;
    for (int m = 0; m < kAccum; ++m) {
      const size_t at = (static_cast<size_t>(step) * kAccum + m) * per_micro;
      micro.push_back(MicroBatch{tokens.data() + at, targets.data() + at, kB, kT});
    }
    const StepResult result = train_step(model, optimizer, micro, 3e-3f);
    EXPECT_TRUE(result.updated) << "step " << step;
    run.losses.push_back(result.loss);
    run.grad_norms.push_back(result.grad_norm);
  }
  for (const Parameter& p : model.parameters()) {
    run.weights.emplace_back(p.value.f32(), p.value.f32() + p.value.numel());
  }
  return run;
}

TEST(GptThreadsTest, EveryMatmulOfTheModelIsSeveralTiles) {
  const int N = kB * kT, C = kConfig.n_embd, V = kConfig.vocab_size;
  // (out features, in features) of the block's four linears and the vocabulary projection.
  const int linears[][2] = {{3 * C, C}, {C, C}, {4 * C, C}, {C, 4 * C}, {V, C}};
  for (const auto& [OC, IC] : linears) {
    SCOPED_TRACE(::testing::Message() << "linear " << IC << " -> " << OC);
    EXPECT_GT(kernels::cpu::matmul_tiles(N, OC, IC).count(), 1) << "forward";
    EXPECT_GT(kernels::cpu::matmul_tiles(N, IC, OC).count(), 1) << "dinp";
    EXPECT_GT(kernels::cpu::matmul_tiles(OC, IC, N).count(), 1) << "dweight";
  }
}

TEST(GptThreadsTest, TrainingIsBitwiseIdenticalAtOneToFourThreads) {
  const TrainingRun one = train(1);
  GPT names(kConfig);
  for (int threads : {2, 3, 4}) {
    SCOPED_TRACE(::testing::Message() << threads << " threads against 1");
    const TrainingRun many = train(threads);
    for (int step = 0; step < kSteps; ++step) {
      EXPECT_EQ(many.losses[step], one.losses[step])
          << std::setprecision(17) << "loss of step " << step << ": " << many.losses[step]
          << " against " << one.losses[step];
      EXPECT_EQ(many.grad_norms[step], one.grad_norms[step])
          << std::setprecision(17) << "gradient norm of step " << step << ": "
          << many.grad_norms[step] << " against " << one.grad_norms[step];
    }
    ASSERT_EQ(many.weights.size(), one.weights.size());
    for (size_t i = 0; i < one.weights.size(); ++i) {
      EXPECT_TRUE(testing::bitwise_equal(many.weights[i], one.weights[i]))
          << names.parameters()[i].name;
    }
  }
}

}  // namespace
}  // namespace loom
