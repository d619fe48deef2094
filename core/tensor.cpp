#include "core/tensor.h"

#include "core/base/checked_math.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

namespace loom {

void Shape::validate() const {
  for (size_t i = 0; i < dims_.size(); ++i) {
    LOOM_CHECK(dims_[i] >= 0, "dimension", i, "of a shape is", dims_[i], "but must be >= 0");
  }
}

int64_t Shape::operator[](int axis) const {
  LOOM_CHECK(axis >= 0 && axis < rank(), "axis", axis, "out of range for shape", str());
  return dims_[static_cast<size_t>(axis)];
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int64_t d : dims_) n = checked_mul(n, d, "a tensor's element count");
  return n;
}

std::string Shape::str() const {
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < dims_.size(); ++i) out << (i ? ", " : "") << dims_[i];
  out << ")";
  return out.str();
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  LOOM_CHECK(device == Device::kCPU, "Tensor::zeros on", device_name(device),
             "is not available in this build");
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = device;
  size_t bytes = t.nbytes();
  // 64-byte alignment keeps every row start friendly to vector loads.
  size_t rounded = (bytes + 63) / 64 * 64;
  void* p = rounded ? std::aligned_alloc(64, rounded) : nullptr;
  LOOM_CHECK(rounded == 0 || p != nullptr, "out of host memory allocating", bytes, "bytes for",
             shape.str());
  if (p) std::memset(p, 0, rounded);
  t.storage_ = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  t.data_ = p;
  return t;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, CachingAllocator& allocator) {
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = allocator.device();
  void* p = allocator.allocate(t.nbytes());
  t.storage_ = std::shared_ptr<void>(p, [&allocator](void* q) { allocator.free(q); });
  t.data_ = p;
  return t;
}

Tensor Tensor::view(void* data, const Shape& shape, DType dtype, Device device) {
  Tensor t;
  t.data_ = data;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = device;
  return t;
}

float* Tensor::f32() const {
  LOOM_CHECK(dtype_ == DType::kF32, "tensor of dtype", dtype_name(dtype_), "read as f32");
  return static_cast<float*>(data_);
}

int32_t* Tensor::i32() const {
  LOOM_CHECK(dtype_ == DType::kI32, "tensor of dtype", dtype_name(dtype_), "read as i32");
  return static_cast<int32_t*>(data_);
}

bf16* Tensor::bf16_data() const {
  LOOM_CHECK(dtype_ == DType::kBF16, "tensor of dtype", dtype_name(dtype_), "read as bf16");
  return static_cast<bf16*>(data_);
}

double* Tensor::f64() const {
  LOOM_CHECK(dtype_ == DType::kF64, "tensor of dtype", dtype_name(dtype_), "read as f64");
  return static_cast<double*>(data_);
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  LOOM_CHECK(shape_.rank() >= 1, "slice_rows of a scalar tensor");
  LOOM_CHECK(0 <= begin && begin <= end && end <= shape_[0], "rows [", begin, ",", end,
             ") out of range for shape", shape_.str());
  std::vector<int64_t> dims = shape_.dims();
  int64_t row_elems = shape_[0] ? numel() / shape_[0] : 0;
  dims[0] = end - begin;
  Tensor t = *this;
  t.shape_ = Shape(dims);
  t.data_ = static_cast<char*>(data_) + begin * row_elems * static_cast<int64_t>(dtype_size(dtype_));
  return t;
}

Tensor Tensor::reshaped(const Shape& shape) const {
  LOOM_CHECK(shape.numel() == numel(), "cannot reshape", shape_.str(), "to", shape.str());
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

void Tensor::fill(float value) const {
  LOOM_CHECK(device_ == Device::kCPU, "fill on", device_name(device_));
  if (dtype_ == DType::kF32) {
    float* p = f32();
    for (int64_t i = 0; i < numel(); ++i) p[i] = value;
  } else if (dtype_ == DType::kBF16) {
    bf16* p = bf16_data();
    bf16 b = float_to_bf16(value);
    for (int64_t i = 0; i < numel(); ++i) p[i] = b;
  } else if (dtype_ == DType::kF64) {
    double* p = f64();
    for (int64_t i = 0; i < numel(); ++i) p[i] = value;
  } else {
    int32_t* p = i32();
    for (int64_t i = 0; i < numel(); ++i) p[i] = static_cast<int32_t>(value);
  }
}

}  // namespace loom
