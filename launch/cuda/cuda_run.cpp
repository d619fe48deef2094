// DeviceRun on a GPU (cuda_run.h).
#include "launch/cuda/cuda_run.h"

#include <set>
#include <string>
#include <vector>

#include "core/backend/cuda/cuda_backend.h"
#include "core/base/check.h"
#include "core/base/device.h"
#include "launch/launch_env.h"
#include "parallel/device_solo_communicator.h"
#include "parallel/nccl_communicator.h"
#include "parallel/staged_communicator.h"

namespace loom {

namespace {

// true when two ranks of `world` hold the same GPU (same host, same PCI bus id).
bool ranks_share_a_gpu(parallel::Communicator& world, int device) {
  const std::vector<std::string> gpus = all_gather_text(world, current_launch().host + "/" + device_pci_bus_id(device));
  return std::set<std::string>(gpus.begin(), gpus.end()).size() < gpus.size();
}

class CudaRun final : public DeviceRun {
 public:
  CudaRun(int device, const parallel::ProcessGrid& grid, Transport transport)
      : context_(device), allocator_(context_.allocator()), backend_(context_) {
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
  uint64_t peak_bytes() const override { return allocator_.stats().peak_in_use_bytes; }
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
  const CachingAllocator& allocator_;  // the context's: its peak in use
  CudaBackend backend_;
  Transport transport_ = Transport::kNccl;
  bool nccl_everywhere_ = false;  // Transport::kNccl asked for: one-rank groups over NCCL too
  std::unique_ptr<parallel::Communicator> tp_, pp_, dp_, embedding_;
};

}  // namespace

std::unique_ptr<DeviceRun> make_cuda_run(int device, const parallel::ProcessGrid& grid, DeviceRun::Transport transport) {
  return std::make_unique<CudaRun>(device, grid, transport);
}

}  // namespace loom
