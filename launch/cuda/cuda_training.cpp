// GpuTraining on a GPU (cuda_training.h).
#include "launch/cuda/cuda_training.h"

#include <string>

#include "core/base/check.h"
#include "core/base/cuda/context.h"
#include "core/cuda/gpt_trainer.h"
#include "parallel/nccl_communicator.h"

namespace loom {

namespace {

class CudaTraining final : public GpuTraining {
 public:
  CudaTraining(int device, parallel::Communicator& dp, GPT& model, AdamW& optimizer, const AdamWSettings& settings,
               int B, int T)
      : model_(model), optimizer_(optimizer), context_(device) {
    if (dp.size() > 1) nccl_ = parallel::NcclCommunicator::create(dp, device, context_.stream(), "dp");
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

}  // namespace

std::unique_ptr<GpuTraining> make_cuda_training(int device, parallel::Communicator& dp, GPT& model, AdamW& optimizer,
                                                const AdamWSettings& settings, int B, int T) {
  return std::make_unique<CudaTraining>(device, dp, model, optimizer, settings, B, T);
}

}  // namespace loom
