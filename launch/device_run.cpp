#include "launch/device_run.h"

#include <algorithm>
#include <cstring>
#include <set>
#include <vector>

#include "core/base/check.h"
#include "core/base/device.h"
#include "launch/launch_env.h"

#ifdef LOOM_HAS_CUDA
#include "core/backend/cuda/cuda_backend.h"
#include "parallel/device_solo_communicator.h"
#include "parallel/nccl_communicator.h"
#include "parallel/staged_communicator.h"
#endif

namespace loom {

ModelParallel DeviceRun::on_device(ModelParallel layout) {
  layout.backend = &backend();
  layout.tp = &tp();
  layout.pp = &pp();
  layout.embedding = &embedding();
  return layout;
}

namespace {

#ifdef LOOM_HAS_CUDA

// true when two ranks of `world` hold the same GPU (same host, same PCI bus id).
bool ranks_share_a_gpu(parallel::Communicator& world, int device) {
  constexpr size_t kWords = 48;  // host name and bus id, with room to spare
  const std::string key = current_launch().host + "/" + device_pci_bus_id(device);
  std::vector<int32_t> mine(kWords, 0);
  std::memcpy(mine.data(), key.data(), std::min(key.size(), kWords * 4 - 1));
  std::vector<int32_t> all(kWords * static_cast<size_t>(world.size()));
  world.all_gather(mine.data(), all.data(), kWords, DType::kI32);
  std::set<std::string> keys;
  for (int r = 0; r < world.size(); ++r) {
    const char* text = reinterpret_cast<const char*>(all.data() + static_cast<size_t>(r) * kWords);
    keys.emplace(text, strnlen(text, kWords * 4));
  }
  return static_cast<int>(keys.size()) < world.size();
}

class CudaRun final : public DeviceRun {
 public:
  CudaRun(int device, const parallel::ProcessGrid& grid, Transport transport)
      : context_(device), backend_(context_) {
    nccl_everywhere_ = transport == Transport::kNccl;
    if (transport == Transport::kAuto) {
      transport = ranks_share_a_gpu(grid.world(), device) ? Transport::kStaged : Transport::kNccl;
    }
    transport_ = transport;
    // Every rank makes its groups in the same order: each creation is collective over its group.
    tp_ = group(grid.tp(), "tp", device);
    pp_ = group(grid.pp(), "pp", device);
    dp_ = group(grid.dp(), "dp", device);
    embedding_ = group(grid.embedding(), "embedding", device);
  }
  ~CudaRun() override {
    // The communicators go first (they hold device scratch and streams of the context), then
    // the backend, then the context.
    embedding_.reset();
    dp_.reset();
    pp_.reset();
    tp_.reset();
  }

  Backend& backend() override { return backend_; }
  parallel::Communicator& tp() override { return *tp_; }
  parallel::Communicator& pp() override { return *pp_; }
  parallel::Communicator& dp() override { return *dp_; }
  parallel::Communicator& embedding() override { return *embedding_; }
  uint64_t peak_bytes() const override { return const_cast<cuda::Context&>(context_).allocator().stats().peak_in_use_bytes; }
  std::string describe() const override {
    return str_cat("GPU", context_.device(), "(" + std::string(context_.properties().name) + "),",
                   "bf16 compute with fp32 master weights, groups",
                   transport_ == Transport::kNccl ? "over NCCL" : "staged through host memory over MPI");
  }

 private:
  std::unique_ptr<parallel::Communicator> group(parallel::Communicator& host, const std::string& name, int device) {
    if (host.size() == 1 && !nccl_everywhere_) {
      auto solo = std::make_unique<parallel::DeviceSoloCommunicator>(context_.stream(), name);
      solo->set_timeout(host.timeout());
      return solo;
    }
    if (transport_ == Transport::kNccl) return parallel::NcclCommunicator::create(host, device, context_.stream(), name);
    return std::make_unique<parallel::StagedCommunicator>(host, context_.stream());
  }

  cuda::Context context_;
  CudaBackend backend_;
  Transport transport_ = Transport::kNccl;
  bool nccl_everywhere_ = false;  // Transport::kNccl asked for: one-rank groups over NCCL too
  std::unique_ptr<parallel::Communicator> tp_, pp_, dp_, embedding_;
};

#endif  // LOOM_HAS_CUDA

}  // namespace

std::unique_ptr<DeviceRun> DeviceRun::on_gpu(int device, const parallel::ProcessGrid& grid, Transport transport) {
#ifdef LOOM_HAS_CUDA
  return std::make_unique<CudaRun>(device, grid, transport);
#else
  (void)device, (void)grid, (void)transport;
  LOOM_CHECK(false, "DeviceRun::on_gpu in a build without CUDA");
  return nullptr;
#endif
}

std::unique_ptr<DeviceRun> DeviceRun::create(const config::RunConfig& cfg, const parallel::ProcessGrid& grid,
                                             const GPTConfig& model, int B, int T) {
  const config::TrainConfig::Device wanted = cfg.train().device();
  if (wanted == config::TrainConfig::DEVICE_CPU) return nullptr;
  const bool fp32 = cfg.train().precision() == config::TrainConfig::PRECISION_FP32;
  const int device = current_launch().device;
  // train.precision PRECISION_FP32 keeps a DEVICE_AUTO run on the CPU: the GPU trains in bf16.
  if (wanted == config::TrainConfig::DEVICE_AUTO && (device < 0 || fp32)) return nullptr;
#ifdef LOOM_HAS_CUDA
  // The GPU's limits are the CUDA backend's to state (its attention takes some head sizes only).
  const config::ParallelConfig& pc = cfg.parallel();
  OpShape attention;
  attention.B = B;
  attention.T = T;
  attention.N = static_cast<int64_t>(B) * T;
  attention.NH = model.n_head / std::max(1, pc.tp());
  attention.C = model.n_embd / std::max(1, pc.tp());
  const std::string unsupported = cuda_backend_unsupported(Op::kAttention, attention);
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
#else
  (void)grid, (void)model, (void)B, (void)T;
  fail_user("train.device is DEVICE_CUDA but this loom was built without CUDA (configure with -DLOOM_CUDA=ON on a "
            "machine with the CUDA toolkit)");
#endif
}

}  // namespace loom
