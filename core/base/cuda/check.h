// Checked CUDA and cuBLAS calls. A failure throws loom::Error naming the statement, the error,
// file:line, the world rank and the host, e.g.
//   kernels/cuda/adamw.cu:88: adamw_kernel<<<...>>> failed: cudaErrorInvalidConfiguration:
//   invalid configuration argument (world rank 3 on host gpu07)
// Kernel launches are checked with LOOM_CUDA_CHECK_LAUNCH("name") right after the launch: it
// reports a bad configuration at once; faults inside the kernel surface at the next checked
// synchronising call.
#pragma once

#include <cublas_api.h>
#include <cuda_runtime.h>

#include <string>

namespace loom::cuda {

[[noreturn]] void throw_failure(const char* statement, const std::string& error, const char* file,
                                int line);
std::string error_text(cudaError_t status);
std::string error_text(cublasStatus_t status);

}  // namespace loom::cuda

#define LOOM_CUDA_CHECK(statement)                                                     \
  do {                                                                                 \
    const cudaError_t loom_cuda_status = (statement);                                  \
    if (loom_cuda_status != cudaSuccess) {                                             \
      ::loom::cuda::throw_failure(#statement, ::loom::cuda::error_text(loom_cuda_status), \
                                  __FILE__, __LINE__);                                 \
    }                                                                                  \
  } while (0)

#define LOOM_CUDA_CHECK_LAUNCH(kernel_name)                                                    \
  do {                                                                                         \
    const cudaError_t loom_cuda_status = cudaGetLastError();                                   \
    if (loom_cuda_status != cudaSuccess) {                                                     \
      ::loom::cuda::throw_failure(kernel_name " launch", ::loom::cuda::error_text(loom_cuda_status), \
                                  __FILE__, __LINE__);                                         \
    }                                                                                          \
  } while (0)

#define LOOM_CUBLAS_CHECK(statement)                                                      \
  do {                                                                                    \
    const cublasStatus_t loom_cublas_status = (statement);                                \
    if (loom_cublas_status != CUBLAS_STATUS_SUCCESS) {                                    \
      ::loom::cuda::throw_failure(#statement, ::loom::cuda::error_text(loom_cublas_status), \
                                  __FILE__, __LINE__);                                    \
    }                                                                                     \
  } while (0)
