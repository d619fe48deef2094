// Tensors in GPU memory: made from a context's caching allocator, filled from and read back to
// host values (with the float <-> bf16 rounding of core/base/dtype.h), zeroed and copied on the
// context's stream.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/base/cuda/context.h"
#include "core/tensor.h"

namespace loom::cuda {

// Uninitialised, resp. zero-filled, device tensors.
Tensor device_empty(Context& context, const Shape& shape, DType dtype);
Tensor device_zeros(Context& context, const Shape& shape, DType dtype);

// A device tensor holding `values` (shape's element count of them) as `dtype` (f32 or bf16).
Tensor upload(Context& context, std::span<const float> values, const Shape& shape, DType dtype = DType::kF32);
Tensor upload(Context& context, std::span<const int32_t> values, const Shape& shape);

// A tensor's values on the host (f32 or bf16 as floats; i32 as ints). Synchronises the stream.
std::vector<float> download_floats(Context& context, const Tensor& tensor);
std::vector<int32_t> download_ints(Context& context, const Tensor& tensor);

// dst = src: same element count and dtype, any devices; queued on the stream (a copy from or to
// pageable host memory returns when the host side is done).
void copy(Context& context, const Tensor& dst, const Tensor& src);
void zero(Context& context, const Tensor& tensor);

}  // namespace loom::cuda
