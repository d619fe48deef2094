#include "core/backend/host_copy.h"

#include "core/base/check.h"

namespace loom {

HostCopy::HostCopy(Backend& backend, const Tensor& tensor, bool download) : backend_(backend), device_(tensor) {
  if (tensor.device() == Device::kCPU) {
    host_ = tensor;
    return;
  }
  host_ = Tensor::zeros(tensor.shape(), tensor.dtype());
  if (download) backend_.to_host(host_.raw(), device_);
}

void HostCopy::upload() {
  if (host_.raw() != device_.raw()) backend_.from_host(device_, host_.raw());
}

Parameter host_parameter(const Parameter& p, const Tensor& host_arena, int64_t offset) {
  LOOM_CHECK(host_arena.device() == Device::kCPU && host_arena.dtype() == DType::kF32 && offset >= 0 &&
                 offset + p.value.numel() <= host_arena.numel(),
             "host view of", p.name, "at", offset, "outside an arena of", host_arena.numel());
  Parameter h = p;
  h.value = Tensor::view(host_arena.f32() + offset, p.value.shape());
  h.grad = Tensor();
  h.compute = Tensor();
  return h;
}

}  // namespace loom
