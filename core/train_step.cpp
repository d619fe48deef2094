#include "core/train_step.h"

#include <algorithm>
#include <cmath>

#include "core/base/check.h"
#include "kernels/cpu/cross_entropy.h"

namespace loom {

namespace {

using parallel::Communicator;
using parallel::P2POp;

constexpr int kActivationTag = 0;
constexpr int kGradientTag = 1;

float counted_targets(const MicroBatch& mb) {
  int n = 0;
  for (int i = 0; i < mb.B * mb.T; ++i) n += mb.targets[i] != kernels::cpu::kIgnoreTarget;
  return static_cast<float>(n);
}

// 1F1B across the pipeline group (Megatron's schedule without interleaving, the order of
// parallel::schedule_1f1b): warm-up forwards, then one forward and one backward alternately,
// then the remaining backwards. Stage boundaries travel as point-to-point messages; where a
// stage both sends and receives in one step the two go as one batch, so no pair of stages can
// wait on each other. Micro-batch i keeps its activations in slot i % (p - s): at most p - s are
// in flight on stage s.
void run_1f1b(GPT& model, AdamW& optimizer, std::span<const MicroBatch> micro,
              const std::vector<float>& scale, std::vector<float>& loss_sums) {
  Communicator& pp = model.pp();
  const int p = pp.size(), s = pp.rank(), m = static_cast<int>(micro.size());
  const bool first = model.first_stage(), last = model.last_stage();
  const int B = micro[0].B, T = micro[0].T;
  for (const MicroBatch& mb : micro) {
    LOOM_CHECK(mb.B == B && mb.T == T, "pipeline micro-batches must share one shape");
  }
  const size_t n = static_cast<size_t>(model.stage_elements(B, T));
  const int slots = p - s;
  auto use = [&](int i) { model.use_slot(i % slots); };
  auto recv_forward = [&](int i) -> std::vector<P2POp> {
    if (first) return {};
    use(i);
    return {P2POp{P2POp::Kind::kRecv, model.stage_input(B, T), n, DType::kF32, s - 1, kActivationTag}};
  };
  auto send_forward = [&](int i) -> std::vector<P2POp> {
    if (last) return {};
    use(i);
    return {P2POp{P2POp::Kind::kSend, const_cast<float*>(model.stage_output()), n, DType::kF32, s + 1,
                  kActivationTag}};
  };
  auto recv_backward = [&](int i) -> std::vector<P2POp> {
    if (last) return {};
    use(i);
    return {P2POp{P2POp::Kind::kRecv, model.stage_output_grad(), n, DType::kF32, s + 1, kGradientTag}};
  };
  auto send_backward = [&](int i) -> std::vector<P2POp> {
    if (first) return {};
    use(i);
    return {P2POp{P2POp::Kind::kSend, const_cast<float*>(model.stage_input_grad()), n, DType::kF32,
                  s - 1, kGradientTag}};
  };
  auto transfer = [&](std::vector<P2POp> a, const std::vector<P2POp>& b) {
    a.insert(a.end(), b.begin(), b.end());
    if (!a.empty()) pp.send_recv_batch(a);
  };
  auto forward = [&](int i) {
    use(i);
    const float loss = model.forward(first ? micro[static_cast<size_t>(i)].tokens : nullptr,
                                     last ? micro[static_cast<size_t>(i)].targets : nullptr, B, T);
    if (last) loss_sums[static_cast<size_t>(i)] = loss * static_cast<float>(model.counted_targets());
  };
  auto backward = [&](int i) {
    use(i);
    const bool final_one = i == m - 1;
    model.backward(scale[static_cast<size_t>(i)], final_one,
                   final_one ? optimizer.gradients_ready() : GradientsReady{});
  };

  const int warmup = std::min(p - s - 1, m), steady = m - warmup;
  for (int i = 0; i < warmup; ++i) {
    transfer(recv_forward(i), {});
    forward(i);
    transfer(send_forward(i), {});
  }
  if (steady > 0) transfer(recv_forward(warmup), {});
  for (int i = 0; i < steady; ++i) {
    const int f = warmup + i;
    forward(f);
    transfer(send_forward(f), recv_backward(i));
    backward(i);
    if (i + 1 == steady) {
      transfer(send_backward(i), {});
    } else {
      // The backward of i is done before the input of f + 1 lands in its (possibly same) slot.
      transfer(send_backward(i), recv_forward(f + 1));
    }
  }
  for (int i = steady; i < m; ++i) {
    transfer(recv_backward(i), {});
    backward(i);
    transfer(send_backward(i), {});
  }
}

}  // namespace

StepResult train_step(GPT& model, AdamW& optimizer, std::span<const MicroBatch> micro_batches, float lr) {
  LOOM_CHECK(!micro_batches.empty(), "train_step needs at least one micro-batch");
  Communicator& dp = optimizer.dp();
  const size_t accum = micro_batches.size();
  // Each replica's share of every micro-batch's loss: its counted targets over all replicas'.
  std::vector<float> local(accum), global(accum);
  for (size_t i = 0; i < accum; ++i) local[i] = counted_targets(micro_batches[i]);
  global = local;  // counts are exact in fp32 below 2^24
  if (dp.size() > 1) dp.all_reduce(global.data(), global.data(), accum, DType::kF32, parallel::ReduceOp::kSum);
  std::vector<float> scale(accum);
  for (size_t i = 0; i < accum; ++i) {
    scale[i] = global[i] > 0 ? local[i] / global[i] / static_cast<float>(accum) : 0.0f;
  }

  model.zero_grad();
  std::vector<float> loss_sums(accum, 0.0f);  // mean loss x counted targets, on the last stage
  if (model.pp().size() == 1) {
    for (size_t i = 0; i < accum; ++i) {
      const MicroBatch& mb = micro_batches[i];
      loss_sums[i] = model.forward(mb.tokens, mb.targets, mb.B, mb.T) * local[i];
      const bool last = i + 1 == accum;
      model.backward(scale[i], last, last ? optimizer.gradients_ready() : GradientsReady{});
    }
  } else {
    run_1f1b(model, optimizer, micro_batches, scale, loss_sums);
  }

  // The step's loss: the mean over micro-batches of each one's global mean, known to the last
  // stage's replicas and then to every stage.
  if (dp.size() > 1) dp.all_reduce(loss_sums.data(), loss_sums.data(), accum, DType::kF32, parallel::ReduceOp::kSum);
  StepResult result;
  for (size_t i = 0; i < accum; ++i) {
    result.loss += global[i] > 0 ? static_cast<double>(loss_sums[i]) / global[i] : 0.0;
  }
  result.loss /= static_cast<double>(accum);
  if (model.pp().size() > 1) {
    float loss = static_cast<float>(result.loss);
    model.pp().broadcast(&loss, 1, DType::kF32, model.pp().size() - 1);
    result.loss = loss;
  }

  model.sum_tied_embedding_gradients();
  optimizer.finish_gradient_reduction();
  result.grad_norm = optimizer.gradient_norm();
  if (!std::isfinite(result.loss) || !std::isfinite(result.grad_norm)) return result;
  optimizer.step(lr, result.grad_norm);
  result.updated = true;
  return result;
}

}  // namespace loom
