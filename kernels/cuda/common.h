// What every CUDA kernel file shares: the bf16 type at the launcher boundary, and grid sizes.
//
// Launchers (the functions declared in kernels/cuda/*.h) are plain C++: the model and the tests
// call them without nvcc. Their bf16 buffers are loom::bf16 (core/base/dtype.h), which has the
// layout of CUDA's __nv_bfloat16; the .cu files reinterpret them. Every launcher takes the stream
// last, checks its preconditions with LOOM_CHECK (values in the message), launches, and checks the
// launch with LOOM_CUDA_CHECK_LAUNCH.
//
// One backward convention for every kernel (llm.c's, and the Backend's, core/backend/backend.h):
// activation gradients are overwritten (=); parameter gradients and the residual stream's gradient
// accumulate (+=). Each header's opening paragraph says which of its outputs are which.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/base/dtype.h"

namespace loom::kernels::cuda {

constexpr int ceil_div(int64_t n, int64_t d) { return static_cast<int>((n + d - 1) / d); }

}  // namespace loom::kernels::cuda
