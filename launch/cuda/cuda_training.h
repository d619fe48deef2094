// GpuTraining on a GPU (launch/gpu_training.h): the bf16 GPU trainer (core/cuda/gpt_trainer.h)
// holding the working copy of the host model and optimizer, the replicas summing gradients over
// NCCL. Part of the CUDA code; the rest of Loom reaches it through the CUDA plugin
// (launch/cuda_plugin.h).
#pragma once

#include <memory>

#include "core/gpt.h"
#include "core/optimizer.h"
#include "launch/gpu_training.h"
#include "parallel/communicator.h"

namespace loom {

// On GPU `device`, micro-batches of (B, T); collective over `dp`.
std::unique_ptr<GpuTraining> make_cuda_training(int device, parallel::Communicator& dp, GPT& model, AdamW& optimizer,
                                                const AdamWSettings& settings, int B, int T);

}  // namespace loom
