// GPU discovery and binding (device.h): the CUDA runtime in a CUDA build, nothing in a CPU build.
#include "core/base/device.h"

#include "core/base/check.h"
#include "core/base/process.h"

#ifdef LOOM_HAS_CUDA
#include <cuda_runtime.h>

#include "core/base/cuda/check.h"
#endif

namespace loom {

#ifdef LOOM_HAS_CUDA

int device_count() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  // No GPU, or no driver to reach one: the CPU it is.
  if (status == cudaErrorNoDevice || status == cudaErrorInsufficientDriver) {
    cudaGetLastError();  // reset the runtime's last error, which this call set
    return 0;
  }
  LOOM_CUDA_CHECK(status);
  return count;
}

void bind_device(int local_rank, int local_size) {
  LOOM_CHECK(local_rank >= 0 && local_rank < local_size, "local rank", local_rank, "of", local_size);
  const int count = device_count();
  if (count == 0) return;
  if (local_size > count) {
    fail_user(local_size, "processes on host", host_name(), "but only", count, count == 1 ? "GPU:" : "GPUs:",
              "start at most", count, "per node");
  }
  LOOM_CUDA_CHECK(cudaSetDevice(local_rank));
}

int current_device() {
  if (device_count() == 0) return -1;
  int device = -1;
  LOOM_CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

std::string device_pci_bus_id(int device) {
  if (device < 0) return "";
  char id[64] = {};
  LOOM_CUDA_CHECK(cudaDeviceGetPCIBusId(id, static_cast<int>(sizeof(id)), device));
  return id;
}

#else  // a CPU build

int device_count() { return 0; }

void bind_device(int local_rank, int local_size) {
  LOOM_CHECK(local_rank >= 0 && local_rank < local_size, "local rank", local_rank, "of", local_size);
}

int current_device() { return -1; }

std::string device_pci_bus_id(int) { return ""; }

#endif  // LOOM_HAS_CUDA

}  // namespace loom
