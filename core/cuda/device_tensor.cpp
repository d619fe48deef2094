#include "core/cuda/device_tensor.h"

#include "core/base/check.h"
#include "core/base/cuda/check.h"

namespace loom::cuda {

namespace {

cudaMemcpyKind copy_kind(Device dst, Device src) {
  if (dst == Device::kCUDA) return src == Device::kCUDA ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice;
  return src == Device::kCUDA ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost;
}

}  // namespace

Tensor device_empty(Context& context, const Shape& shape, DType dtype) {
  return Tensor::empty(shape, dtype, context.allocator());
}

Tensor device_zeros(Context& context, const Shape& shape, DType dtype) {
  Tensor t = device_empty(context, shape, dtype);
  zero(context, t);
  return t;
}

Tensor upload(Context& context, std::span<const float> values, const Shape& shape, DType dtype) {
  LOOM_CHECK(static_cast<int64_t>(values.size()) == shape.numel(), "upload of", values.size(),
             "values into a tensor of shape", shape.str());
  LOOM_CHECK(dtype == DType::kF32 || dtype == DType::kBF16, "upload of floats as", dtype_name(dtype));
  Tensor host = Tensor::zeros(shape, dtype);
  if (dtype == DType::kF32) {
    std::copy(values.begin(), values.end(), host.f32());
  } else {
    for (size_t i = 0; i < values.size(); ++i) host.bf16_data()[i] = float_to_bf16(values[i]);
  }
  Tensor t = device_empty(context, shape, dtype);
  copy(context, t, host);
  context.synchronize();  // `host` is freed on return
  return t;
}

Tensor upload(Context& context, std::span<const int32_t> values, const Shape& shape) {
  LOOM_CHECK(static_cast<int64_t>(values.size()) == shape.numel(), "upload of", values.size(),
             "values into a tensor of shape", shape.str());
  Tensor t = device_empty(context, shape, DType::kI32);
  Tensor host = Tensor::view(const_cast<int32_t*>(values.data()), shape, DType::kI32);
  copy(context, t, host);
  context.synchronize();
  return t;
}

std::vector<float> download_floats(Context& context, const Tensor& tensor) {
  LOOM_CHECK(tensor.dtype() == DType::kF32 || tensor.dtype() == DType::kBF16, "download of a",
             dtype_name(tensor.dtype()), "tensor as floats");
  Tensor host = Tensor::zeros(tensor.shape(), tensor.dtype());
  copy(context, host, tensor);
  context.synchronize();
  std::vector<float> values(static_cast<size_t>(tensor.numel()));
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = tensor.dtype() == DType::kF32 ? host.f32()[i] : bf16_to_float(host.bf16_data()[i]);
  }
  return values;
}

std::vector<int32_t> download_ints(Context& context, const Tensor& tensor) {
  std::vector<int32_t> values(static_cast<size_t>(tensor.numel()));
  Tensor host = Tensor::view(values.data(), tensor.shape(), DType::kI32);
  LOOM_CHECK(tensor.dtype() == DType::kI32, "download of a", dtype_name(tensor.dtype()), "tensor as ints");
  copy(context, host, tensor);
  context.synchronize();
  return values;
}

void copy(Context& context, const Tensor& dst, const Tensor& src) {
  LOOM_CHECK(dst.numel() == src.numel() && dst.dtype() == src.dtype(), "copy of", src.shape().str(),
             dtype_name(src.dtype()), "into", dst.shape().str(), dtype_name(dst.dtype()));
  if (src.nbytes() == 0) return;
  LOOM_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(),
                                  copy_kind(dst.device(), src.device()), context.stream()));
}

void zero(Context& context, const Tensor& tensor) {
  if (tensor.nbytes() == 0) return;
  if (tensor.device() == Device::kCPU) {
    tensor.fill(0);
    return;
  }
  LOOM_CUDA_CHECK(cudaMemsetAsync(tensor.raw(), 0, tensor.nbytes(), context.stream()));
}

}  // namespace loom::cuda
