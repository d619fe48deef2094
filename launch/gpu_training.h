// `loom train` on GPUs: which device a run trains on (train.device), and the bridge between the
// training loop, which keeps its model and optimizer on the host for checkpoints, evaluation and
// the model file, and the bf16 GPU trainer (core/cuda/gpt_trainer.h), which holds the working
// copy on the GPU.
//
// The host objects are brought up to date (to_host) before they are read: before a checkpoint,
// an evaluation, the model file; the GPU takes them back (from_host) after they were written by a
// resume or a rollback. The GPU path runs layouts without tensor or pipeline parallelism: one GPU
// per process, the data-parallel replicas' gradients summed over NCCL.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "core/config.h"
#include "core/gpt.h"
#include "core/optimizer.h"
#include "core/train_step.h"
#include "parallel/process_grid.h"

namespace loom {

class GpuTraining {
 public:
  // Null when the run trains on the CPU: train.device is DEVICE_CPU, or DEVICE_AUTO without a GPU
  // bound to this process (launch/launch_env.h) or with tensor or pipeline parallelism. UserError
  // (the same on every rank) for DEVICE_CUDA without a GPU, in a build without CUDA, or with a
  // layout the GPU path does not run. Collective over the grid's world when it returns non-null.
  static std::unique_ptr<GpuTraining> create(const config::RunConfig& cfg, const parallel::ProcessGrid& grid,
                                             GPT& model, AdamW& optimizer, int B, int T);
  virtual ~GpuTraining() = default;

  virtual StepResult step(std::span<const MicroBatch> micro_batches, float lr) = 0;
  virtual double evaluate(std::span<const MicroBatch> micro_batches) = 0;
  // Host model and optimizer <- GPU (weights, moments, step count); and back.
  // to_host is local; from_host is collective over the data-parallel group (the moments of a
  // ZeRO-1 host optimizer are assembled from every replica's slice).
  virtual void to_host() = 0;
  virtual void from_host() = 0;
  // The host model's weights to the GPU, without the optimizer state: local to this rank.
  virtual void weights_from_host() = 0;
  // Peak bytes of GPU memory the trainer held (the caching allocator's peak in use).
  virtual uint64_t device_peak_bytes() const = 0;
  // "GPU 0 (NVIDIA H200), bf16 compute with fp32 master weights"
  virtual std::string describe() const = 0;
};

}  // namespace loom
