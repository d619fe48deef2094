// Precision: which dtypes a model's tensors have on a backend.
//
//   kF32   everything f32 (the CPU's default; the reference every other precision is held to).
//   kBF16  mixed precision as GPUs train: bf16 storage of the activations and of the compute copy
//          of the weights, f32 compute inside each op, f32 master weights, weight gradients and
//          Adam moments; statistics (LayerNorm, softmax, losses) f32. On the CPU the same rounding
//          points are emulated, so the GPU's logic is tested where there is no GPU.
#pragma once

#include <cstdint>
#include <string_view>

#include "core/base/dtype.h"

namespace loom {

enum class Precision : uint8_t { kF32 = 0, kBF16 = 1 };

constexpr DType activation_dtype_of(Precision precision) {
  return precision == Precision::kBF16 ? DType::kBF16 : DType::kF32;
}

constexpr std::string_view precision_name(Precision precision) {
  return precision == Precision::kBF16 ? "bf16" : "fp32";
}

}  // namespace loom
