// One optimizer step: forward and backward over this data-parallel rank's micro-batches, the
// gradient reduction, the global norm, and the AdamW update.
//
// The loss is the mean cross-entropy over every counted target of the step's *global* batch, so
// that any number of data-parallel replicas computes what one process computes on the whole
// batch: each micro-batch's counts are summed over the replicas first, and each replica scales
// its backward by its share (local count / global count / accumulation steps).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/gpt.h"
#include "core/optimizer.h"

namespace loom {

struct MicroBatch {
  const int32_t* tokens;   // (B, T)
  const int32_t* targets;  // (B, T), -1 = not counted
  int B;
  int T;
  const int32_t* doc_starts = nullptr;  // (B, T) or nullptr: one document per row
};

struct StepResult {
  double loss = 0;       // mean over the micro-batches of each one's global mean loss
  double grad_norm = 0;  // before clipping
  bool updated = false;  // false when the loss or the gradient norm was not finite
};

// Targets of a micro-batch that count (not -1).
float counted_targets(const MicroBatch& mb);

// Each replica's share of every micro-batch's loss: its counted targets over all replicas'.
// The step's loss is the mean over micro-batches of (summed row losses / global count), and a
// row's loss enters the backward scaled by 1 / (global count x micro-batches): what one process
// computes on the whole batch. Collective over `dp` (a sum of the counts when it has > 1 rank),
// whose buffers live on `backend`'s device (the model's).
struct LossShares {
  std::vector<float> local;   // counted targets of this replica, per micro-batch
  std::vector<float> global;  // ... of all replicas
  std::vector<float> scale;   // local / global / micro-batches: the backward's loss scale
};
LossShares loss_shares(std::span<const MicroBatch> micro_batches, parallel::Communicator& dp, Backend& backend);

// Collective over the model's tensor-parallel and pipeline groups and the optimizer's
// data-parallel group. With several pipeline stages the micro-batches run in the 1F1B schedule.
StepResult train_step(GPT& model, AdamW& optimizer, std::span<const MicroBatch> micro_batches, float lr);

// The same for a rank holding several model chunks, each with its own optimizer: chunk c of
// pipeline rank s is virtual stage c * pp + s (model_parallel_for), run in the interleaved
// schedule; the gradient norm is global over all chunks. Needs micro-batches % pp == 0 when
// there is more than one chunk.
StepResult train_step(std::span<GPT* const> chunks, std::span<AdamW* const> optimizers,
                      std::span<const MicroBatch> micro_batches, float lr);

// The loss of the micro-batches without training (validation): forward passes only, through the
// pipeline if the chunks form one, the mean over micro-batches of each one's global mean loss as
// train_step reports it. Collective like train_step; `dp` is the data-parallel group.
double evaluate_loss(std::span<GPT* const> chunks, parallel::Communicator& dp,
                     std::span<const MicroBatch> micro_batches);

// One row (sequence) of a micro-batch scored by the model: what log-likelihood evaluations
// (multiple-choice tasks, docs/evaluation.md) compare.
struct RowLikelihood {
  double log_likelihood = 0;  // sum over the row's counted targets of log p(target | the tokens before it)
  int count = 0;              // counted targets of the row
  bool greedy = true;         // every counted target has the largest logit (a tie counts): greedy decoding
                              // would have produced them
};

// The rows of the micro-batches (micro-batch 0's B rows first, then 1's, ...), scored by
// forward passes only. The last stage computes each counted target's log-softmax from its
// vocabulary slice of the logits (the row maxima and sums of exponentials reduced over the
// tensor-parallel group, in double on the host) and broadcasts the rows to the other pipeline
// stages, so every rank of the model's groups returns them. Each micro-batch runs through the
// pipeline alone, so micro-batches may differ in shape. Collective over the model's
// tensor-parallel and pipeline groups, not over data parallelism: each replica scores its own
// micro-batches. UserError for a target outside the vocabulary.
std::vector<RowLikelihood> row_log_likelihoods(std::span<GPT* const> chunks,
                                               std::span<const MicroBatch> micro_batches);

}  // namespace loom
