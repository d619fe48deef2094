#include "launch/gpu_training.h"

#include "core/base/check.h"
#include "launch/launch_env.h"

#ifdef LOOM_HAS_CUDA
#include "core/backend/cuda/cuda_backend.h"
#include "core/base/cuda/context.h"
#include "core/cuda/gpt_trainer.h"
#include "parallel/nccl_communicator.h"
#endif

namespace loom {

namespace {

#ifdef LOOM_HAS_CUDA

class CudaTraining final : public GpuTraining {
 public:
  CudaTraining(int device, const config::RunConfig& cfg, const parallel::ProcessGrid& grid, GPT& model,
               AdamW& optimizer, int B, int T)
      : model_(model), optimizer_(optimizer), context_(device) {
    parallel::Communicator& dp = grid.dp();
    if (dp.size() > 1) nccl_ = parallel::NcclCommunicator::create(dp, device, context_.stream(), "dp");
    const config::OptimizerConfig& oc = cfg.optimizer();
    const AdamWSettings settings{oc.beta1(), oc.beta2(), oc.eps(), oc.weight_decay(), oc.grad_clip()};
    trainer_ = std::make_unique<cuda::GPTTrainer>(context_, model.config(), settings, B, T,
                                                  dp.size() > 1 ? &dp : nullptr, nccl_.get());
    from_host();
  }
  StepResult step(std::span<const MicroBatch> micro_batches, float lr) override { return trainer_->step(micro_batches, lr); }
  double evaluate(std::span<const MicroBatch> micro_batches) override { return trainer_->evaluate(micro_batches); }
  void to_host() override {
    trainer_->store_weights(model_);
    trainer_->store_optimizer(optimizer_);
  }
  void weights_from_host() override { trainer_->load_weights(model_); }
  void from_host() override {
    trainer_->load_weights(model_);
    trainer_->load_optimizer(optimizer_);
  }
  uint64_t device_peak_bytes() const override { return trainer_->memory().peak_in_use_bytes; }
  std::string describe() const override {
    return str_cat("GPU", context_.device(), "(" + std::string(context_.properties().name) + "),",
                   "bf16 compute with fp32 master weights");
  }

 private:
  GPT& model_;
  AdamW& optimizer_;
  cuda::Context context_;
  std::unique_ptr<parallel::NcclCommunicator> nccl_;
  std::unique_ptr<cuda::GPTTrainer> trainer_;
};

#endif

}  // namespace

std::unique_ptr<GpuTraining> GpuTraining::create(const config::RunConfig& cfg, const parallel::ProcessGrid& grid,
                                                 GPT& model, AdamW& optimizer, int B, int T) {
  const config::TrainConfig::Device wanted = cfg.train().device();
  if (wanted == config::TrainConfig::DEVICE_CPU) return nullptr;
  const config::ParallelConfig& pc = cfg.parallel();
  const bool splits_model = pc.tp() > 1 || pc.pp() > 1;
  const int device = current_launch().device;
  if (wanted == config::TrainConfig::DEVICE_AUTO && (device < 0 || splits_model)) return nullptr;
#ifdef LOOM_HAS_CUDA
  // The GPU's limits are the CUDA backend's to state (its attention takes some head sizes only).
  OpShape attention;
  attention.B = B;
  attention.T = T;
  attention.N = static_cast<int64_t>(B) * T;
  attention.NH = model.config().n_head;
  attention.C = model.config().n_embd;
  const std::string unsupported = cuda_backend_unsupported(Op::kAttention, attention);
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
  return std::make_unique<CudaTraining>(device, cfg, grid, model, optimizer, B, T);
#else
  (void)grid, (void)model, (void)optimizer, (void)B, (void)T;
  fail_user("train.device is DEVICE_CUDA but this loom was built without CUDA (configure with -DLOOM_CUDA=ON on a "
            "machine with the CUDA toolkit)");
#endif
}

}  // namespace loom
