// DeviceRun on a GPU (launch/device_run.h): a CUDA context, the CudaBackend on its stream, and the
// device groups (NCCL, staged through host memory, or copies on the device for one rank). Part of
// the CUDA code; the rest of Loom reaches it through the CUDA plugin (launch/cuda_plugin.h).
#pragma once

#include <memory>

#include "launch/device_run.h"
#include "parallel/process_grid.h"

namespace loom {

// DeviceRun::on_gpu's run: collective over the grid's world.
std::unique_ptr<DeviceRun> make_cuda_run(int device, const parallel::ProcessGrid& grid, DeviceRun::Transport transport);

}  // namespace loom
