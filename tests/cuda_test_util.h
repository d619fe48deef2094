// Shared helpers for GPU tests (tests/**/cuda/): the process's GPU context, skipping where no GPU
// is present, and bf16 rounding of host inputs so that the CPU twin sees exactly what the GPU
// kernel read.
#pragma once

#include <gtest/gtest.h>

#include <vector>

#include "core/base/device.h"
#include "core/cuda/device_tensor.h"
#include "test_util.h"

// At the top of every GPU test: without a GPU (CI) the test is reported as skipped.
#define LOOM_SKIP_WITHOUT_GPU()                                                   \
  do {                                                                            \
    if (::loom::device_count() == 0) GTEST_SKIP() << "no GPU on this machine";   \
  } while (0)

namespace loom::testing {

// GPU 0's context, made on first use and kept for the test process.
inline cuda::Context& gpu() {
  static cuda::Context context(0);
  return context;
}

// values rounded to bf16 and back: what a bf16 buffer made from them holds.
inline std::vector<float> bf16_rounded(std::vector<float> values) {
  for (float& v : values) v = bf16_to_float(float_to_bf16(v));
  return values;
}

// A bf16 tensor on GPU 0 holding `values` rounded to bf16.
inline Tensor bf16_upload(const std::vector<float>& values, const Shape& shape) {
  return cuda::upload(gpu(), values, shape, DType::kBF16);
}

}  // namespace loom::testing
