// HostCopy: the bytes of a backend's tensor where the host can read and write them.
//
// On the CPU that is the tensor itself (no copy). On a device it is a host buffer filled by one
// device-to-host copy (`download`) and written back by one host-to-device copy (upload()). What
// the host does to a model's weights (initialisation, checkpoints, Hugging Face import and
// export, whole-model assembly) goes through one of these, so that it is the same code for both
// backends and costs one copy of each arena on a GPU.
#pragma once

#include <vector>

#include "core/backend/backend.h"
#include "core/parameter.h"
#include "core/tensor.h"

namespace loom {

class HostCopy {
 public:
  // `download`: the host copy starts with the tensor's values; else its contents are undefined
  // until the caller writes them (every element it uploads).
  HostCopy(Backend& backend, const Tensor& tensor, bool download);
  HostCopy(const HostCopy&) = delete;
  HostCopy& operator=(const HostCopy&) = delete;

  // A CPU tensor of the device tensor's shape and dtype.
  const Tensor& host() const { return host_; }
  // The device tensor = host() (nothing to do when they are the same memory).
  void upload();

 private:
  Backend& backend_;
  Tensor device_;
  Tensor host_;
};

// `p` with its value viewing the host copy `host` of the arena it lives in at `offset` (its
// gradient and compute copy dropped): what host code reads and writes for one parameter.
Parameter host_parameter(const Parameter& p, const Tensor& host_arena, int64_t offset);

}  // namespace loom
