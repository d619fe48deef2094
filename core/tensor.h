// Tensor: a shape, a dtype, a device and a pointer to bytes that it either owns or views.
//
// Tensors are values that are cheap to copy: an owning tensor shares its storage (reference
// counted) with its copies; a view points into memory owned by somebody else (a parameter arena,
// an activation arena) and never frees it. Layouts are always contiguous row-major; a view of a
// sub-range is made with `slice_rows` or `view` on a raw pointer. Kernels never see Tensors, only
// raw pointers and sizes: the Tensor is for the model and the tests to keep shapes honest.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/base/caching_allocator.h"
#include "core/base/check.h"
#include "core/base/dtype.h"

namespace loom {

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) : dims_(dims) { validate(); }
  explicit Shape(std::vector<int64_t> dims) : dims_(std::move(dims)) { validate(); }

  int rank() const { return static_cast<int>(dims_.size()); }
  int64_t operator[](int axis) const;
  int64_t numel() const;
  const std::vector<int64_t>& dims() const { return dims_; }
  bool operator==(const Shape& other) const { return dims_ == other.dims_; }
  bool operator!=(const Shape& other) const { return dims_ != other.dims_; }
  std::string str() const;  // "(4, 256)"

 private:
  void validate() const;
  std::vector<int64_t> dims_;
};

class Tensor {
 public:
  Tensor() = default;

  // A new zero-filled tensor that owns its bytes.
  static Tensor zeros(const Shape& shape, DType dtype = DType::kF32, Device device = Device::kCPU);
  // A new tensor, not initialised, whose bytes come from `allocator` (its device: a GPU's memory
  // for a CUDA context's allocator) and go back to it when the last copy of the tensor is gone;
  // the allocator must outlive them.
  static Tensor empty(const Shape& shape, DType dtype, CachingAllocator& allocator);
  // A view of `data` (not owned); the caller keeps the memory alive while the view is used.
  static Tensor view(void* data, const Shape& shape, DType dtype = DType::kF32,
                     Device device = Device::kCPU);

  const Shape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  int64_t numel() const { return shape_.numel(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool defined() const { return data_ != nullptr || numel() == 0; }
  bool owns_storage() const { return storage_ != nullptr; }

  void* raw() const { return data_; }
  // Typed access; checks that the element type matches the dtype.
  float* f32() const;
  int32_t* i32() const;
  bf16* bf16_data() const;
  double* f64() const;

  // Rows [begin, end) of the first axis, as a view sharing this tensor's storage.
  Tensor slice_rows(int64_t begin, int64_t end) const;
  // Same bytes, another shape with the same number of elements.
  Tensor reshaped(const Shape& shape) const;
  void fill(float value) const;

 private:
  std::shared_ptr<void> storage_;  // null for views
  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCPU;
};

}  // namespace loom
