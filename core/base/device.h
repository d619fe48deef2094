// The GPUs this process can see, and which one a rank takes.
//
// Asked of the NVIDIA driver (libcuda.so.1, opened with dlopen: three calls, no header of the CUDA
// toolkit), not of the CUDA runtime, so that knowing whether there is a GPU maps none of the
// toolkit's libraries: `loom` loads those with its CUDA plugin only when a run trains on a GPU
// (launch/cuda_plugin.h). A machine without the driver or without a GPU sees zero devices and
// runs on the CPU; so does a build without CUDA, which could not use one. `CUDA_VISIBLE_DEVICES=`
// (empty) makes a CUDA build use the CPU on a GPU machine. The device numbers are the CUDA
// runtime's: a GPU run makes its device current when it creates its context
// (core/base/cuda/context.h). A failing driver is a loom::Error naming the call, its error and
// this process.
#pragma once

#include <string>

namespace loom {

// GPUs visible to this process (CUDA_VISIBLE_DEVICES applies); 0 without CUDA, the driver or a GPU.
int device_count();

// The GPU local rank `local_rank` of the `local_size` processes on this host takes: local_rank;
// -1 when there is no GPU. UserError when local_size > device_count(): "N processes on host H but
// only M GPUs: start at most M per node".
int pick_device(int local_rank, int local_size);

// A device's PCI bus id, e.g. "0000:3B:00.0", which names the same GPU in every process of the
// host whatever CUDA_VISIBLE_DEVICES says; "" for device -1.
std::string device_pci_bus_id(int device);

}  // namespace loom
