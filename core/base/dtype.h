// Element types and devices: the two facts every buffer carries.
//
// fp32 is the CPU compute type and the type of master weights everywhere; bf16 is the GPU compute
// type; f64 holds the CPU's accumulators (a gradient norm's sum of squares). bf16 conversion lives here so that every layer rounds the same way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace loom {

enum class DType : uint8_t { kF32 = 0, kBF16 = 1, kI32 = 2, kF64 = 3 };
enum class Device : uint8_t { kCPU = 0, kCUDA = 1 };

constexpr size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kBF16: return 2;
    case DType::kI32: return 4;
    case DType::kF64: return 8;
  }
  return 0;
}

constexpr std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kBF16: return "bf16";
    case DType::kI32: return "i32";
    case DType::kF64: return "f64";
  }
  return "?";
}

constexpr std::string_view device_name(Device device) {
  return device == Device::kCPU ? "cpu" : "cuda";
}

// The bf16 conversions below compile for the GPU too (kernels/cuda), so that both round alike.
#ifdef __CUDACC__
#define LOOM_HOST_DEVICE __host__ __device__
#else
#define LOOM_HOST_DEVICE
#endif

// bf16 storage type: the top 16 bits of an IEEE float, rounded to nearest even.
struct bf16 {
  uint16_t bits = 0;
};

LOOM_HOST_DEVICE inline bf16 float_to_bf16(float value) {
  uint32_t u;
  std::memcpy(&u, &value, 4);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0) {
    return bf16{static_cast<uint16_t>((u >> 16) | 0x40)};  // keep NaN a (quiet) NaN
  }
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{static_cast<uint16_t>(u >> 16)};
}

LOOM_HOST_DEVICE inline float bf16_to_float(bf16 value) {
  uint32_t u = static_cast<uint32_t>(value.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace loom
