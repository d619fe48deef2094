// GPT-2 training on one GPU in bf16 mixed precision, data parallel over several GPUs.
//
// The same model as core/gpt.h (parameter names, order, initialisation, the loss of a step) with
// the kernels of kernels/cuda: compute in bf16 (weights, activations, the residual stream's
// gradient), fp32 where precision is lost otherwise (LayerNorm statistics, softmax statistics,
// the loss, every weight gradient, accumulated over micro-batches), and an fp32 master copy of
// the weights with fp32 Adam moments, from which the optimizer writes the bf16 copy after each
// update (kernels/cuda/adamw.h: one launch for all parameters).
//
// The vocabulary is padded on the device to a multiple of 128 rows of wte (GPT-2: 50257 ->
// 50304) so that the logits matmul runs on aligned tiles; the padding rows are zero, receive no
// gradient and are never updated, and the loss ignores their columns.
//
// Data parallelism: each replica runs its micro-batches, then the fp32 gradients are summed over
// `dp_device` (NCCL, or MPI staged through host memory; a Communicator on device buffers) and
// the counts and losses over `dp_host` (MPI on host buffers). Tensor and pipeline parallelism
// run on the CPU path only.
//
// After the first step no step allocates device memory (the caching allocator's statistics say
// so; tested).
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "core/base/cuda/context.h"
#include "core/gpt.h"
#include "core/optimizer.h"
#include "core/train_step.h"
#include "kernels/cuda/adamw.h"
#include "kernels/cuda/matmul.h"
#include "parallel/communicator.h"

namespace loom::cuda {

class GPTTrainer {
 public:
  // Buffers for micro-batches of (B, T), T <= config.max_seq_len. The weights are zero until
  // load_weights().
  GPTTrainer(Context& context, const GPTConfig& config, const AdamWSettings& settings, int B, int T,
             parallel::Communicator* dp_host = nullptr, parallel::Communicator* dp_device = nullptr);
  ~GPTTrainer();
  GPTTrainer(const GPTTrainer&) = delete;
  GPTTrainer& operator=(const GPTTrainer&) = delete;

  // Weights from a one-rank CPU model of the same config (its init_weights() or a checkpoint),
  // and back (for checkpoints and comparisons): the fp32 master copy, exactly.
  void load_weights(const GPT& model);
  void store_weights(GPT& model) const;
  // The Adam moments and step count, in the CPU optimizer's layout (checkpoints); and back. With
  // data parallelism the CPU optimizer holds its replica's slice (ZeRO-1): load_optimizer is then
  // collective over dp_device.
  void load_optimizer(const AdamW& optimizer);
  void store_optimizer(AdamW& optimizer) const;

  // One optimizer step over this replica's micro-batches (each (B, T) as constructed), with the
  // loss and gradient norm defined as loom::train_step defines them. The update is skipped
  // (updated = false) when the gradient norm is not finite.
  StepResult step(std::span<const MicroBatch> micro_batches, float lr);
  // The loss of the micro-batches without training (validation), as loom::evaluate_loss.
  double evaluate(std::span<const MicroBatch> micro_batches);

  const GPTConfig& config() const { return config_; }
  int64_t num_parameters() const { return num_parameters_; }
  int64_t step_count() const { return step_; }
  // Device memory of this trainer (the context's allocator).
  const AllocatorStats& memory() const { return context_.allocator().stats(); }

 private:
  struct Buffers;
  struct ParamSlot {
    int64_t device_offset;  // in the device arenas
    int64_t host_offset;    // in the CPU model's arena
    int64_t count;          // elements copied between them (wte: the real V rows)
  };
  // Runs the forward of one micro-batch; with dloss > 0 also its backward, accumulating weight
  // gradients. Returns nothing: the per-row losses stay on the device until the step's end.
  void forward_backward(const MicroBatch& mb, float* losses, float dloss, bool backward);
  void upload_batch(const MicroBatch& mb);

  Context& context_;
  GPTConfig config_;
  AdamWSettings settings_;
  int B_, T_, Vp_;
  std::unique_ptr<parallel::Communicator> solo_;  // dp_host_ with one replica
  parallel::Communicator* dp_host_;               // never null
  parallel::Communicator* dp_device_;             // null with one replica
  int64_t num_parameters_ = 0;
  int64_t step_ = 0;
  std::vector<ParamSlot> slots_;  // in core/gpt.h's parameters() order
  std::vector<kernels::cuda::AdamWSegment> segments_;
  std::unique_ptr<kernels::cuda::Matmul> matmul_;
  std::unique_ptr<Buffers> buffers_;
};

// The vocabulary rounded up to a multiple of 128.
int padded_vocab(int V);

}  // namespace loom::cuda
