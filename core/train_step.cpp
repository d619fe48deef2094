#include "core/train_step.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "core/base/check.h"
#include "kernels/cpu/cross_entropy.h"
#include "parallel/pipeline_schedule.h"

namespace loom {

namespace {

using parallel::Communicator;
using parallel::P2POp;

// Message tags: what travels into virtual stage k (its input) and out of it (the gradient of its
// input). They label messages for MPI's error reports only: NCCL has no tags, so the schedules
// post each pair of ranks' sends and receives in the same order and messages match by that order
// alone (tested: the pipeline equivalence tests also run over a communicator that drops tags).
int forward_tag(int virtual_stage) { return 2 * virtual_stage; }
int backward_tag(int virtual_stage) { return 2 * virtual_stage + 1; }

// Runs this rank's pipeline schedule (parallel::pipeline_schedules: 1F1B, or interleaved with
// several chunks). Chunk c of pipeline rank s is virtual stage c * p + s; its input comes from
// the rank before (rank p - 1 for the first stage of a chunk > 0: a ring), its output goes to the
// rank after. Sends are posted and left in flight (send_recv_batch_async) while the rank goes on
// computing; a receive waits where the schedule needs its data. So no rank ever blocks in a send,
// and a schedule without a cycle of waits (which simulate_pipeline checks) cannot deadlock.
// Each micro-batch in flight on a chunk holds one activation slot from its forward to its
// backward; a free slot is reused once the send from its buffers has completed (else a new slot
// is made, so that no rank waits for a send).
// With no optimizers the pass is forward only (evaluation): every rank runs the forwards of
// micro-batch 0 through its chunks, then of micro-batch 1, ..., an order in which each waits only
// for earlier (micro-batch, virtual stage) pairs, so it cannot deadlock either.
void run_pipeline(std::span<GPT* const> chunks, std::span<AdamW* const> optimizers,
                  std::span<const MicroBatch> micro, const std::vector<float>& scale) {
  const bool forward_only = optimizers.empty();
  Communicator& pp = chunks[0]->pp();
  const int p = pp.size(), s = pp.rank(), v = static_cast<int>(chunks.size());
  const int m = static_cast<int>(micro.size()), last_stage = v * p - 1;
  const int B = micro[0].B, T = micro[0].T;
  for (const MicroBatch& mb : micro) {
    LOOM_CHECK(mb.B == B && mb.T == T, "pipeline micro-batches must share one shape");
  }
  for (int c = 0; c < v; ++c) {
    const GPT& g = *chunks[static_cast<size_t>(c)];
    LOOM_CHECK(g.first_stage() == (c * p + s == 0) && g.last_stage() == (c * p + s == last_stage),
               "chunk", c, "of pipeline rank", s, "is not virtual stage", c * p + s, "of", v * p);
  }
  const size_t n = static_cast<size_t>(chunks[0]->stage_elements(B, T));
  const int prev = (s + p - 1) % p, next = (s + 1) % p;

  struct Slot {
    std::unique_ptr<parallel::CommRequest> send;  // in flight from this slot's buffers
  };
  struct ChunkSlots {
    std::vector<Slot> slots;
    std::vector<int> free;
    std::vector<int> of_micro_batch;
  };
  std::vector<ChunkSlots> state(static_cast<size_t>(v));
  for (ChunkSlots& cs : state) cs.of_micro_batch.assign(static_cast<size_t>(m), -1);
  auto wait_send = [](Slot& slot) {
    if (slot.send) slot.send->wait();
    slot.send.reset();
  };
  const DType dtype = chunks[0]->activation_dtype();
  auto post_send = [&](Slot& slot, const void* buffer, int tag, int peer) {
    const P2POp op{P2POp::Kind::kSend, const_cast<void*>(buffer), n, dtype, peer, tag};
    slot.send = pp.send_recv_batch_async(std::span<const P2POp>(&op, 1));
  };

  LOOM_CHECK(v == 1 || p > 1, "several model chunks need several pipeline stages, got", v, "chunks on one stage");
  std::vector<parallel::PipelineAction> schedule;
  if (forward_only) {
    for (int i = 0; i < m; ++i) {
      for (int c = 0; c < v; ++c) schedule.push_back({parallel::PipelineAction::Kind::kForward, i, c});
    }
  } else {
    schedule = v == 1 ? parallel::schedule_1f1b(p, s, m) : parallel::schedule_interleaved(p, s, v, m);
  }
  for (const parallel::PipelineAction& action : schedule) {
    const int c = action.chunk, i = action.micro_batch, k = c * p + s;
    GPT& g = *chunks[static_cast<size_t>(c)];
    ChunkSlots& cs = state[static_cast<size_t>(c)];
    const MicroBatch& mb = micro[static_cast<size_t>(i)];
    if (action.kind == parallel::PipelineAction::Kind::kForward) {
      // A free slot whose send has completed, else a new one: waiting here for a send would
      // wait for the peer to reach its receive, an order the schedule does not promise.
      auto reusable = std::find_if(cs.free.begin(), cs.free.end(), [&](int j) {
        Slot& candidate = cs.slots[static_cast<size_t>(j)];
        return !candidate.send || candidate.send->test();
      });
      int slot = 0;
      if (reusable == cs.free.end()) {
        slot = static_cast<int>(cs.slots.size());
        cs.slots.emplace_back();
      } else {
        slot = *reusable;
        cs.free.erase(reusable);
        wait_send(cs.slots[static_cast<size_t>(slot)]);  // complete: releases the request
      }
      cs.of_micro_batch[static_cast<size_t>(i)] = slot;
      g.use_slot(slot);
      if (k > 0) pp.recv(g.stage_input(B, T), n, dtype, prev, forward_tag(k));
      g.forward(k == 0 ? mb.tokens : nullptr, k == last_stage ? mb.targets : nullptr, B, T, mb.doc_starts);
      if (k != last_stage) {
        post_send(cs.slots[static_cast<size_t>(slot)], g.stage_output(), forward_tag(k + 1), next);
      }
      if (forward_only) cs.free.push_back(slot);
    } else {
      const int slot = cs.of_micro_batch[static_cast<size_t>(i)];
      LOOM_CHECK(slot >= 0, "the schedule runs the backward of micro-batch", i, "of chunk", c,
                 "before its forward");
      Slot& held = cs.slots[static_cast<size_t>(slot)];
      g.use_slot(slot);
      if (k < last_stage) pp.recv(g.stage_output_grad(), n, dtype, next, backward_tag(k));
      // The output went out before its gradient came back: this completes at once. The backward
      // may rewrite that output (full recomputation), so the send must be over.
      wait_send(held);
      const bool final_one = i == m - 1;  // each chunk runs its backwards in micro-batch order
      g.backward(scale[static_cast<size_t>(i)], final_one,
                 final_one ? optimizers[static_cast<size_t>(c)]->gradients_ready() : GradientsReady{});
      if (k > 0) post_send(held, g.stage_input_grad(), backward_tag(k - 1), prev);
      cs.free.push_back(slot);
    }
  }
  for (ChunkSlots& cs : state) {
    for (Slot& slot : cs.slots) wait_send(slot);
  }
}

// The host's few numbers of a step (loss sums, target counts) over a group of the model, whose
// buffers live on `backend`'s device: on the CPU the vector itself, on a GPU through a device
// copy (the group is NCCL's there), read back after the group's operations are complete.
void all_reduce_host_values(Communicator& group, Backend& backend, std::vector<float>& values,
                            parallel::ReduceOp op = parallel::ReduceOp::kSum) {
  if (group.size() == 1 || values.empty()) return;
  if (backend.device() == Device::kCPU) {
    group.all_reduce(values.data(), values.data(), values.size(), DType::kF32, op);
    return;
  }
  const Tensor device = backend.zeros({static_cast<int64_t>(values.size())}, DType::kF32);
  backend.from_host(device, values.data());
  group.all_reduce(device.raw(), device.raw(), values.size(), DType::kF32, op);
  group.synchronize();
  backend.to_host(values.data(), device);
}

void broadcast_host_values(Communicator& group, Backend& backend, std::vector<float>& values, int root) {
  if (group.size() == 1 || values.empty()) return;
  if (backend.device() == Device::kCPU) {
    group.broadcast(values.data(), values.size(), DType::kF32, root);
    return;
  }
  const Tensor device = backend.zeros({static_cast<int64_t>(values.size())}, DType::kF32);
  backend.from_host(device, values.data());
  group.broadcast(device.raw(), values.size(), DType::kF32, root);
  group.synchronize();
  backend.to_host(values.data(), device);
}

float broadcast_host_value(Communicator& group, Backend& backend, float value, int root) {
  std::vector<float> values{value};
  broadcast_host_values(group, backend, values, root);
  return values[0];
}

// Runs the micro-batches (forward only without optimizers) and returns the mean over them of
// each one's global mean loss, known to every rank: the last stage's replicas sum their loss
// sums, then the last stage broadcasts to the others.
double run_micro_batches(std::span<GPT* const> chunks, std::span<AdamW* const> optimizers,
                         std::span<const MicroBatch> micro, const LossShares& shares, Communicator& dp) {
  GPT& model = *chunks[0];
  const size_t accum = micro.size();
  std::vector<float> loss_sums(accum, 0.0f);  // mean loss x counted targets, on the last stage
  // The last stage's losses stay on the device until every micro-batch has run: the host waits
  // for them once, not after each forward.
  GPT& final_chunk = *chunks.back();
  final_chunk.set_defer_loss(true);
  struct Undefer {
    GPT& g;
    ~Undefer() { g.set_defer_loss(false); }
  } undefer{final_chunk};
  if (model.pp().size() == 1 && chunks.size() == 1) {
    for (size_t i = 0; i < accum; ++i) {
      const MicroBatch& mb = micro[i];
      model.forward(mb.tokens, mb.targets, mb.B, mb.T, mb.doc_starts);
      if (optimizers.empty()) continue;
      const bool last = i + 1 == accum;
      model.backward(shares.scale[i], last, last ? optimizers[0]->gradients_ready() : GradientsReady{});
    }
  } else {
    run_pipeline(chunks, optimizers, micro, shares.scale);
  }
  if (final_chunk.last_stage()) {
    // The last stage runs its forwards in micro-batch order, in both schedules.
    const std::vector<float> losses = final_chunk.take_losses();
    LOOM_CHECK(losses.size() == accum, "the last stage ran", losses.size(), "forwards for", accum, "micro-batches");
    for (size_t i = 0; i < accum; ++i) loss_sums[i] = losses[i] * shares.local[i];
  }
  all_reduce_host_values(dp, model.backend(), loss_sums);
  double loss = 0;
  for (size_t i = 0; i < accum; ++i) {
    loss += shares.global[i] > 0 ? static_cast<double>(loss_sums[i]) / shares.global[i] : 0.0;
  }
  loss /= static_cast<double>(accum);
  if (model.pp().size() > 1) {
    loss = broadcast_host_value(model.pp(), model.backend(), static_cast<float>(loss), model.pp().size() - 1);
  }
  return loss;
}

// The rows of micro-batch `mb` from the logits of the last forward of `head` (the last stage,
// run without targets): each rank holds the logits of its vocabulary slice, so a counted
// target's log-probability is its logit - max - log(sum of exp(logit - max)), the max and the
// sum reduced over the tensor-parallel group; the target's logit comes from the one rank whose
// slice holds it (the others add 0).
std::vector<RowLikelihood> score_rows(GPT& head, const MicroBatch& mb) {
  Backend& backend = head.backend();
  const Tensor view = head.logits_view();
  const int64_t N = static_cast<int64_t>(mb.B) * mb.T, Vl = head.vocab_count(), v0 = head.vocab_start();
  LOOM_CHECK(view.numel() == N * Vl, "the last stage's logits hold", view.numel(), "values, not", N, "x", Vl);
  std::vector<float> logits(static_cast<size_t>(N * Vl));
  if (view.dtype() == DType::kF32) {
    backend.to_host(logits.data(), view);
  } else {
    LOOM_CHECK(view.dtype() == DType::kBF16, "logits of an unexpected dtype");
    std::vector<bf16> narrow(logits.size());
    backend.to_host(narrow.data(), view);
    for (size_t i = 0; i < narrow.size(); ++i) logits[i] = bf16_to_float(narrow[i]);
  }
  std::vector<int64_t> counted;  // positions n = b * T + t with a counted target
  for (int64_t n = 0; n < N; ++n) {
    if (mb.targets[n] != kernels::cpu::kIgnoreTarget) counted.push_back(n);
  }
  const size_t P = counted.size();
  std::vector<float> row_max(P, -std::numeric_limits<float>::infinity());
  for (size_t i = 0; i < P; ++i) {
    const float* x = logits.data() + counted[i] * Vl;
    for (int64_t v = 0; v < Vl; ++v) row_max[i] = std::max(row_max[i], x[v]);
  }
  all_reduce_host_values(head.tp(), backend, row_max, parallel::ReduceOp::kMax);
  std::vector<float> sums(2 * P, 0.0f);  // (sum of exp(logit - max), the target's logit) per position
  for (size_t i = 0; i < P; ++i) {
    const float* x = logits.data() + counted[i] * Vl;
    double sum = 0;
    for (int64_t v = 0; v < Vl; ++v) sum += std::exp(static_cast<double>(x[v]) - row_max[i]);
    sums[2 * i] = static_cast<float>(sum);
    const int64_t local = mb.targets[counted[i]] - v0;
    if (local >= 0 && local < Vl) sums[2 * i + 1] = x[local];
  }
  all_reduce_host_values(head.tp(), backend, sums);
  std::vector<RowLikelihood> rows(static_cast<size_t>(mb.B));
  for (size_t i = 0; i < P; ++i) {
    RowLikelihood& row = rows[static_cast<size_t>(counted[i] / mb.T)];
    const float target_logit = sums[2 * i + 1];
    row.log_likelihood += static_cast<double>(target_logit) - row_max[i] - std::log(static_cast<double>(sums[2 * i]));
    ++row.count;
    row.greedy = row.greedy && target_logit >= row_max[i];
  }
  return rows;
}

// The last pipeline rank's rows to the others, as floats: the log-likelihood in two parts (its
// float rounding and the rest), so that it arrives with a double's precision.
void broadcast_rows(Communicator& pp, Backend& backend, std::vector<RowLikelihood>& rows) {
  if (pp.size() == 1) return;
  std::vector<float> values(4 * rows.size());
  for (size_t r = 0; r < rows.size(); ++r) {
    const float high = static_cast<float>(rows[r].log_likelihood);
    values[4 * r] = high;
    values[4 * r + 1] = static_cast<float>(rows[r].log_likelihood - high);
    values[4 * r + 2] = static_cast<float>(rows[r].count);
    values[4 * r + 3] = rows[r].greedy ? 1.0f : 0.0f;
  }
  broadcast_host_values(pp, backend, values, pp.size() - 1);
  for (size_t r = 0; r < rows.size(); ++r) {
    rows[r].log_likelihood = static_cast<double>(values[4 * r]) + values[4 * r + 1];
    rows[r].count = static_cast<int>(values[4 * r + 2]);
    rows[r].greedy = values[4 * r + 3] != 0.0f;
  }
}

}  // namespace

float counted_targets(const MicroBatch& mb) {
  int n = 0;
  for (int i = 0; i < mb.B * mb.T; ++i) n += mb.targets[i] != kernels::cpu::kIgnoreTarget;
  return static_cast<float>(n);
}

LossShares loss_shares(std::span<const MicroBatch> micro, Communicator& dp, Backend& backend) {
  const size_t accum = micro.size();
  LossShares shares;
  shares.local.resize(accum);
  for (size_t i = 0; i < accum; ++i) shares.local[i] = counted_targets(micro[i]);
  shares.global = shares.local;  // counts are exact in fp32 below 2^24
  all_reduce_host_values(dp, backend, shares.global);
  shares.scale.resize(accum);
  for (size_t i = 0; i < accum; ++i) {
    shares.scale[i] = shares.global[i] > 0 ? shares.local[i] / shares.global[i] / static_cast<float>(accum) : 0.0f;
  }
  return shares;
}

StepResult train_step(GPT& model, AdamW& optimizer, std::span<const MicroBatch> micro_batches, float lr) {
  GPT* chunk = &model;
  AdamW* chunk_optimizer = &optimizer;
  return train_step(std::span<GPT* const>(&chunk, 1), std::span<AdamW* const>(&chunk_optimizer, 1),
                    micro_batches, lr);
}

StepResult train_step(std::span<GPT* const> chunks, std::span<AdamW* const> optimizers,
                      std::span<const MicroBatch> micro_batches, float lr) {
  LOOM_CHECK(!micro_batches.empty(), "train_step needs at least one micro-batch");
  LOOM_CHECK(!chunks.empty() && chunks.size() == optimizers.size(), "train_step needs one optimizer per model chunk, got",
             chunks.size(), "chunks and", optimizers.size(), "optimizers");
  Communicator& dp = optimizers[0]->dp();
  const LossShares shares = loss_shares(micro_batches, dp, chunks[0]->backend());
  for (GPT* chunk : chunks) chunk->zero_grad();
  StepResult result;
  result.loss = run_micro_batches(chunks, optimizers, micro_batches, shares, dp);

  for (GPT* chunk : chunks) chunk->sum_tied_embedding_gradients();
  for (AdamW* optimizer : optimizers) optimizer->finish_gradient_reduction();
  std::vector<const AdamW*> all(optimizers.begin(), optimizers.end());
  result.grad_norm = global_gradient_norm(all);
  if (!std::isfinite(result.loss) || !std::isfinite(result.grad_norm)) return result;
  for (AdamW* optimizer : optimizers) optimizer->step(lr, result.grad_norm);
  result.updated = true;
  return result;
}

double evaluate_loss(std::span<GPT* const> chunks, Communicator& dp,
                     std::span<const MicroBatch> micro_batches) {
  LOOM_CHECK(!micro_batches.empty() && !chunks.empty(), "evaluate_loss needs model chunks and micro-batches");
  return run_micro_batches(chunks, {}, micro_batches, loss_shares(micro_batches, dp, chunks[0]->backend()), dp);
}

std::vector<RowLikelihood> row_log_likelihoods(std::span<GPT* const> chunks,
                                               std::span<const MicroBatch> micro_batches) {
  LOOM_CHECK(!chunks.empty(), "row_log_likelihoods needs model chunks");
  GPT& model = *chunks[0];
  GPT& final_chunk = *chunks.back();
  const int V = model.config().vocab_size;
  std::vector<RowLikelihood> all;
  for (const MicroBatch& mb : micro_batches) {
    check_token_ids(mb.targets, mb.B, mb.T, 1, V, /*allow_ignore=*/true, "target");
    // Without targets the last stage computes the logits alone (no loss): they are read here.
    const MicroBatch logits_only{mb.tokens, nullptr, mb.B, mb.T, mb.doc_starts};
    if (model.pp().size() == 1 && chunks.size() == 1) {
      model.forward(mb.tokens, nullptr, mb.B, mb.T);
    } else {
      run_pipeline(chunks, {}, std::span<const MicroBatch>(&logits_only, 1), {0.0f});
    }
    std::vector<RowLikelihood> rows(static_cast<size_t>(mb.B));
    if (final_chunk.last_stage()) rows = score_rows(final_chunk, mb);
    broadcast_rows(model.pp(), model.backend(), rows);
    all.insert(all.end(), rows.begin(), rows.end());
  }
  return all;
}

}  // namespace loom
