#include "core/train_step.h"

#include <cmath>

#include "core/base/check.h"

namespace loom {

StepResult train_step(GPT& model, AdamW& optimizer, std::span<const MicroBatch> micro_batches, float lr) {
  LOOM_CHECK(!micro_batches.empty(), "train_step needs at least one micro-batch");
  parallel::Communicator& dp = optimizer.dp();
  const size_t accum = micro_batches.size();
  StepResult result;
  model.zero_grad();
  for (size_t i = 0; i < accum; ++i) {
    const MicroBatch& mb = micro_batches[i];
    const float local_mean = model.forward(mb.tokens, mb.targets, mb.B, mb.T);
    const float local_count = static_cast<float>(model.counted_targets());
    // [sum of losses, count] over the replicas; counts are exact in fp32 below 2^24.
    float totals[2] = {local_mean * local_count, local_count};
    if (dp.size() > 1) dp.all_reduce(totals, totals, 2, DType::kF32, parallel::ReduceOp::kSum);
    const bool any = totals[1] > 0;
    result.loss += any ? static_cast<double>(totals[0]) / totals[1] : 0.0;
    const float share = any ? local_count / totals[1] : 0.0f;
    const bool last = i + 1 == accum;
    model.backward(share / static_cast<float>(accum), last,
                   last ? optimizer.gradients_ready() : GradientsReady{});
  }
  result.loss /= static_cast<double>(accum);
  optimizer.finish_gradient_reduction();
  result.grad_norm = optimizer.gradient_norm();
  if (!std::isfinite(result.loss) || !std::isfinite(result.grad_norm)) return result;
  optimizer.step(lr, result.grad_norm);
  result.updated = true;
  return result;
}

}  // namespace loom
