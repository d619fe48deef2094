// What a run on GPUs adds to a CPU run: the GPU, the backend the model computes on there, and
// communicators of device buffers over the process grid's groups.
//
// The model, the optimizer, the pipeline schedules, checkpoints and evaluation are the CPU's
// (core/gpt.h, core/optimizer.h, core/train_step.h): a GPU run builds its model on backend()
// with the tp, pp and embedding groups below and its optimizer with dp(), and the rest follows.
// The grid's own (MPI) groups stay the host's: whole-model assembly and checkpoints move host
// buffers over them.
//
// The device groups: NCCL when every rank of the world has a GPU of its own (stream-ordered: a
// collective is enqueued on the backend's stream and returns), else the staged path through
// pinned host memory and the MPI group (ranks that share a GPU: NCCL refuses two ranks on one
// device). A one-rank group is a copy on the device.
#pragma once

#include <memory>
#include <string>

#include "core/backend/backend.h"
#include "core/config.h"
#include "core/gpt.h"
#include "parallel/communicator.h"
#include "parallel/process_grid.h"

namespace loom {

class DeviceRun {
 public:
  // How the groups move device buffers. kAuto: NCCL when no two ranks share a GPU, else staged;
  // one-rank groups are copies on the device. kNccl: every group over NCCL, one-rank ones too
  // (tests of NCCL on one GPU).
  enum class Transport : uint8_t { kAuto, kNccl, kStaged };

  // Null when the run trains on the CPU: train.device DEVICE_CPU, or DEVICE_AUTO without a GPU
  // bound to this process (launch/launch_env.h), with train.precision PRECISION_FP32, or with a
  // model the GPU backend cannot run. UserError, the same on every rank, for DEVICE_CUDA without
  // a GPU, in a build without CUDA, with PRECISION_FP32, or with a model the GPU cannot run
  // (micro-batches of (B, T)). Collective over the grid's world when it returns non-null.
  static std::unique_ptr<DeviceRun> create(const config::RunConfig& cfg, const parallel::ProcessGrid& grid,
                                           const GPTConfig& model, int B, int T);
  // On GPU `device` whatever the configuration says (tests): collective over the grid's world.
  static std::unique_ptr<DeviceRun> on_gpu(int device, const parallel::ProcessGrid& grid,
                                              Transport transport = Transport::kAuto);
  virtual ~DeviceRun() = default;

  virtual Backend& backend() = 0;
  // Device-buffer twins of grid.tp(), grid.pp(), grid.dp() and grid.embedding().
  virtual parallel::Communicator& tp() = 0;
  virtual parallel::Communicator& pp() = 0;
  virtual parallel::Communicator& dp() = 0;
  virtual parallel::Communicator& embedding() = 0;
  // `layout` (model_parallel_for's, over the grid's groups) with this run's backend and groups.
  ModelParallel on_device(ModelParallel layout);
  // Peak bytes of GPU memory in use (the caching allocator's peak).
  virtual uint64_t peak_bytes() const = 0;
  // "GPU 0 (NVIDIA H200), bf16 compute with fp32 master weights, groups over NCCL"
  virtual std::string describe() const = 0;
};

}  // namespace loom
