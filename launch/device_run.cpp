#include "launch/device_run.h"

#include <algorithm>

#include "core/base/check.h"
#include "launch/cuda_plugin.h"
#include "launch/launch_env.h"

namespace loom {

ModelParallel DeviceRun::on_device(ModelParallel layout) {
  layout.backend = &backend();
  layout.tp = &tp();
  layout.pp = &pp();
  layout.embedding = &embedding();
  return layout;
}

// The run on a GPU is the CUDA code's (launch/cuda/cuda_run.cpp), reached through the plugin.
std::unique_ptr<DeviceRun> DeviceRun::on_gpu(int device, const parallel::ProcessGrid& grid, Transport transport) {
  return cuda_plugin().device_run(device, grid, transport);
}

std::unique_ptr<DeviceRun> DeviceRun::create(const config::RunConfig& cfg, const parallel::ProcessGrid& grid,
                                             const GPTConfig& model, int B, int T) {
  const config::TrainConfig::Device wanted = cfg.train().device();
  if (wanted == config::TrainConfig::DEVICE_CPU) return nullptr;
  const bool fp32 = cfg.train().precision() == config::TrainConfig::PRECISION_FP32;
  const int device = current_launch().device;
  // train.precision PRECISION_FP32 keeps a DEVICE_AUTO run on the CPU: the GPU trains in bf16.
  if (wanted == config::TrainConfig::DEVICE_AUTO && fp32) return nullptr;
  // Without a GPU, DEVICE_AUTO trains on the CPU without loading the CUDA code; DEVICE_CUDA loads it
  // (a missing plugin is the first thing to say) before it finds there is no GPU.
  if (wanted == config::TrainConfig::DEVICE_AUTO && device < 0) return nullptr;
  // Processes that share a GPU train there only when asked to: the staged path is slow.
  const std::string& sharing = current_launch().gpu_sharing;
  if (wanted == config::TrainConfig::DEVICE_AUTO && !sharing.empty()) {
    fail_user(sharing + ";", "with train.device DEVICE_AUTO each process takes a GPU of its own. Set train.device:",
              "DEVICE_CUDA to share the GPUs (their groups then move data through host memory, slower than",
              "NCCL), or DEVICE_CPU to train on the CPU");
  }
  if (!cuda_built_in()) {
    fail_user("train.device is DEVICE_CUDA but this loom was built without CUDA (configure with -DLOOM_CUDA=ON on a "
              "machine with the CUDA toolkit)");
  }
  // The GPU's limits are the CUDA backend's to state (its attention takes some head sizes only).
  const config::ParallelConfig& pc = cfg.parallel();
  OpShape attention;
  attention.B = B;
  attention.T = T;
  attention.N = static_cast<int64_t>(B) * T;
  attention.NH = model.n_head / std::max(1, pc.tp());
  attention.C = model.n_embd / std::max(1, pc.tp());
  const std::string unsupported = cuda_plugin().unsupported(Op::kAttention, attention);
  if (wanted == config::TrainConfig::DEVICE_AUTO && !unsupported.empty()) return nullptr;
  if (device < 0) {
    fail_user("train.device is DEVICE_CUDA but this process has no GPU (none visible on host", current_launch().host + ");",
              "set train.device: DEVICE_CPU or DEVICE_AUTO");
  }
  if (fp32) {
    fail_user("train.device DEVICE_CUDA trains in bf16 mixed precision, but train.precision is PRECISION_FP32;",
              "set train.precision: PRECISION_BF16 (or PRECISION_AUTO), or train on the CPU (train.device: DEVICE_CPU)");
  }
  if (!unsupported.empty()) {
    fail_user("train.device DEVICE_CUDA cannot train this model:", unsupported, "(model.n_embd",
              str_cat(model.n_embd) + ", model.n_head", str_cat(model.n_head) + ", parallel.tp", str_cat(pc.tp()) + ");",
              "change the model or train on the CPU (train.device: DEVICE_CPU)");
  }
  return on_gpu(device, grid);
}

}  // namespace loom
