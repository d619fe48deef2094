// The GPUs this process can see, and binding it to one of them.
//
// In a CUDA build (LOOM_HAS_CUDA) these call the CUDA runtime, every call checked: a failure is a
// loom::Error naming the statement, file:line, the world rank and the host. A CUDA build on a
// machine without a GPU (or without the driver) sees zero devices and runs on the CPU; so does a
// CPU build, where device_count() is 0 and nothing is bound. `CUDA_VISIBLE_DEVICES=` (empty)
// makes a CUDA build use the CPU on a GPU machine.
#pragma once

#include <string>

namespace loom {

// GPUs visible to this process (CUDA_VISIBLE_DEVICES applies); 0 without CUDA or without a GPU.
int device_count();

// Makes device `local_rank` this process's current device, for local rank `local_rank` of the
// `local_size` processes on this host. Does nothing when there is no GPU. UserError when
// local_size > device_count(): "N processes on host H but only M GPUs: start at most M per node".
void bind_device(int local_rank, int local_size);

// The current device (-1 without one) and a device's PCI bus id, e.g. "0000:3B:00.0", which names
// the same GPU in every process of the host whatever CUDA_VISIBLE_DEVICES says ("" without CUDA).
int current_device();
std::string device_pci_bus_id(int device);

}  // namespace loom
