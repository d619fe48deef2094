// The seam between `loom` and its CUDA code: the one interface through which the rest of Loom
// reaches the GPU.
//
// In a CUDA build every source that needs the CUDA toolkit (kernels/cuda, core/base/cuda,
// core/backend/cuda, core/cuda, parallel's NCCL, staged and device communicators, launch/cuda)
// is built into a shared library, libloom_cuda.so, which links the CUDA runtime, cuBLAS, cuBLASLt
// and NCCL. The `loom` executable links none of them: it loads the plugin with dlopen the first
// time a run trains on a GPU (DeviceRun::create), so that a CPU run maps none
// of those libraries (over 200 MiB resident, docs/benchmarks.md). Whether there is a GPU at all is
// asked of the driver, not of the plugin (core/base/device.h).
//
// The plugin is looked for next to the executable (build/loom, build/libloom_cuda.so) and then in
// the library folder of an installation (bin/loom, lib/libloom_cuda.so), both found from
// /proc/self/exe. Its one entry point, extern "C" loom_cuda_plugin(), hands over a CudaPlugin when
// the plugin was built from the same sources as the executable. The plugin calls back into the
// executable for everything that is not CUDA (Tensor, the model, the communicators): `loom`
// exports Loom's symbols for it.
//
// The tests, the benchmarks and a project that uses Loom link the CUDA code instead (loom_lib):
// cuda_plugin() then answers with the entry point linked in, and loads nothing.
#pragma once

#include <memory>
#include <string>

#include "core/backend/backend.h"
#include "launch/device_run.h"
#include "parallel/process_grid.h"

namespace loom {

class CudaPlugin {
 public:
  // Empty when the CUDA backend runs `op` at `shape`, else one sentence saying why not
  // (cuda_backend_unsupported, core/backend/cuda/cuda_backend.h).
  virtual std::string unsupported(Op op, const OpShape& shape) const = 0;
  // DeviceRun::on_gpu: the backend and device groups on GPU `device`; collective over the grid's world.
  virtual std::unique_ptr<DeviceRun> device_run(int device, const parallel::ProcessGrid& grid,
                                                DeviceRun::Transport transport) const = 0;

 protected:
  ~CudaPlugin() = default;  // the plugin's own object, never deleted through this interface
};

// Whether this is a CUDA build: one whose GPU runs load the plugin (or link the CUDA code).
bool cuda_built_in();

// The CUDA code, found on the first call and kept for the life of the process. UserError, one
// sentence naming the file(s) looked for and what dlopen said, when the plugin is missing, cannot
// be loaded or comes from another build; and in a build without CUDA.
const CudaPlugin& cuda_plugin();

// For `loom --version`: "CUDA: not built in", or where the CUDA code comes from, e.g.
// "CUDA: built in, loaded by GPU runs from libloom_cuda.so"; checks the file is there, loads nothing.
std::string cuda_build_line();

}  // namespace loom

// The plugin's entry point (launch/cuda/plugin.cpp). Sets `built_from` to the version line of the
// sources the plugin was built from (version_line(), core/base/version.h) and returns its
// CudaPlugin when that is `version_line`, the caller's; else null.
extern "C" const loom::CudaPlugin* loom_cuda_plugin(const char* version_line, const char** built_from);
