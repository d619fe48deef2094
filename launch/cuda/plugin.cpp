// The CUDA plugin's entry point: the CudaPlugin that the rest of Loom reaches the GPU through
// (launch/cuda_plugin.h), over the CUDA code of every layer.
#include <string>

#include "core/backend/cuda/cuda_backend.h"
#include "core/base/version.h"
#include "core/base/version_info.h"
#include "launch/cuda/cuda_run.h"
#include "launch/cuda_plugin.h"

namespace loom {

namespace {

class CudaCode final : public CudaPlugin {
 public:
  std::string unsupported(Op op, const OpShape& shape) const override { return cuda_backend_unsupported(op, shape); }
  std::unique_ptr<DeviceRun> device_run(int device, const parallel::ProcessGrid& grid,
                                        DeviceRun::Transport transport) const override {
    return make_cuda_run(device, grid, transport);
  }
};

}  // namespace

}  // namespace loom

extern "C" const loom::CudaPlugin* loom_cuda_plugin(const char* version_line, const char** built_from) {
  // The version of these sources, compiled in: the executable's version_line() would answer for the
  // executable, whose symbols the plugin binds to.
  static const std::string mine = loom::version_line(loom::kVersionNumber, loom::kBuildCommit);
  static const loom::CudaCode code;
  *built_from = mine.c_str();
  return mine == version_line ? &code : nullptr;
}
