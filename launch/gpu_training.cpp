#include "launch/gpu_training.h"

#include "core/base/check.h"
#include "launch/cuda_plugin.h"
#include "launch/launch_env.h"

namespace loom {

std::unique_ptr<GpuTraining> GpuTraining::create(const config::RunConfig& cfg, const parallel::ProcessGrid& grid,
                                                 GPT& model, AdamW& optimizer, int B, int T) {
  const config::TrainConfig::Device wanted = cfg.train().device();
  if (wanted == config::TrainConfig::DEVICE_CPU) return nullptr;
  const config::ParallelConfig& pc = cfg.parallel();
  const bool splits_model = pc.tp() > 1 || pc.pp() > 1;
  const int device = current_launch().device;
  if (wanted == config::TrainConfig::DEVICE_AUTO && splits_model) return nullptr;
  // Without a GPU, DEVICE_AUTO trains on the CPU without loading the CUDA code; DEVICE_CUDA loads it
  // (a missing plugin is the first thing to say) before it finds there is no GPU.
  if (wanted == config::TrainConfig::DEVICE_AUTO && device < 0) return nullptr;
  if (!cuda_built_in()) {
    fail_user("train.device is DEVICE_CUDA but this loom was built without CUDA (configure with -DLOOM_CUDA=ON on a "
              "machine with the CUDA toolkit)");
  }
  // The GPU's limits are the CUDA backend's to state (its attention takes some head sizes only).
  OpShape attention;
  attention.B = B;
  attention.T = T;
  attention.N = static_cast<int64_t>(B) * T;
  attention.NH = model.config().n_head;
  attention.C = model.config().n_embd;
  const std::string unsupported = cuda_plugin().unsupported(Op::kAttention, attention);
  if (wanted == config::TrainConfig::DEVICE_AUTO && !unsupported.empty()) return nullptr;
  if (device < 0) {
    fail_user("train.device is DEVICE_CUDA but this process has no GPU (none visible on host", current_launch().host + ");",
              "set train.device: DEVICE_CPU or DEVICE_AUTO");
  }
  if (splits_model) {
    fail_user("train.device DEVICE_CUDA runs data parallelism only, but parallel.tp =", pc.tp(), "and parallel.pp =", pc.pp(),
              "; tensor and pipeline parallelism train on the CPU (train.device: DEVICE_CPU)");
  }
  if (!unsupported.empty()) {
    fail_user("train.device DEVICE_CUDA cannot train this model:", unsupported, "(model.n_embd",
              str_cat(model.config().n_embd) + ", model.n_head", str_cat(model.config().n_head) + ");",
              "change the model or train on the CPU (train.device: DEVICE_CPU)");
  }
  const config::OptimizerConfig& oc = cfg.optimizer();
  const AdamWSettings settings{oc.beta1(), oc.beta2(), oc.eps(), oc.weight_decay(), oc.grad_clip()};
  return cuda_plugin().gpu_training(device, grid.dp(), model, optimizer, settings, B, T);
}

}  // namespace loom
