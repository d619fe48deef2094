// GPU discovery (device.h) through the NVIDIA driver's own library, opened at run time: a
// machine without it (CI) has no GPU, and no library of the CUDA toolkit is ever loaded here.
#include "core/base/device.h"

#include <dlfcn.h>

#include "core/base/check.h"
#include "core/base/process.h"

namespace loom {

namespace {

// The driver API's calls that discovery needs, declared here rather than taken from cuda.h: a
// result is a CUresult, a device handle a CUdevice (both int).
struct Driver {
  int (*init)(unsigned flags) = nullptr;
  int (*device_count)(int* count) = nullptr;
  int (*device_get)(int* device, int ordinal) = nullptr;
  int (*pci_bus_id)(char* id, int length, int device) = nullptr;
  int (*error_name)(int result, const char** name) = nullptr;
  int devices = 0;
};

constexpr int kSuccess = 0;
constexpr int kStubLibrary = 34;  // CUDA_ERROR_STUB_LIBRARY: the toolkit's stub, not a driver
constexpr int kNoDevice = 100;    // CUDA_ERROR_NO_DEVICE

void check_driver(const Driver& driver, int result, const char* call) {
  if (result == kSuccess) return;
  const char* name = nullptr;
  if (driver.error_name == nullptr || driver.error_name(result, &name) != kSuccess || name == nullptr) {
    name = "an unknown error";
  }
  throw Error(str_cat("the NVIDIA driver's", call, "failed:", name, "(" + std::to_string(result) + "),", this_process()));
}

template <typename Function>
void resolve(void* library, const char* name, Function& function) {
  function = reinterpret_cast<Function>(dlsym(library, name));
  LOOM_CHECK(function != nullptr, "the NVIDIA driver (libcuda.so.1) has no", name);
}

Driver open_driver() {
  Driver driver;
#ifdef LOOM_HAS_CUDA
  // Left open for the life of the process: a GPU run's CUDA runtime uses this same library.
  void* library = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) return driver;  // no driver: no GPU
  resolve(library, "cuInit", driver.init);
  resolve(library, "cuDeviceGetCount", driver.device_count);
  resolve(library, "cuDeviceGet", driver.device_get);
  resolve(library, "cuDeviceGetPCIBusId", driver.pci_bus_id);
  resolve(library, "cuGetErrorName", driver.error_name);
  const int started = driver.init(0);
  if (started == kNoDevice || started == kStubLibrary) return driver;
  check_driver(driver, started, "cuInit");
  check_driver(driver, driver.device_count(&driver.devices), "cuDeviceGetCount");
#endif
  return driver;
}

// Asked once per process; the answer does not change while it runs.
const Driver& driver() {
  static const Driver opened = open_driver();
  return opened;
}

}  // namespace

int device_count() { return driver().devices; }

int pick_device(int local_rank, int local_size) {
  LOOM_CHECK(local_rank >= 0 && local_rank < local_size, "local rank", local_rank, "of", local_size);
  const int count = device_count();
  if (count == 0) return -1;
  if (local_size > count) {
    fail_user(local_size, "processes on host", host_name(), "but only", count, count == 1 ? "GPU:" : "GPUs:",
              "start at most", count, "per node");
  }
  return local_rank;
}

std::string device_pci_bus_id(int device) {
  if (device < 0) return "";
  const Driver& d = driver();
  LOOM_CHECK(device < d.devices, "GPU", device, "of the", d.devices, "this process sees");
  int handle = 0;
  check_driver(d, d.device_get(&handle, device), "cuDeviceGet");
  char id[64] = {};
  check_driver(d, d.pci_bus_id(id, static_cast<int>(sizeof(id)), handle), "cuDeviceGetPCIBusId");
  return id;
}

}  // namespace loom
