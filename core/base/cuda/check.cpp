#include "core/base/cuda/check.h"

#include "core/base/check.h"
#include "core/base/process.h"

namespace loom::cuda {

void throw_failure(const char* statement, const std::string& error, const char* file, int line) {
  throw Error(std::string(statement) + " failed: " + error + " (" + this_process() + ")",
              std::string(file) + ":" + std::to_string(line));
}

std::string error_text(cudaError_t status) {
  return std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
}

std::string error_text(cublasStatus_t status) {
  return std::string(cublasGetStatusName(status)) + ": " + cublasGetStatusString(status);
}

}  // namespace loom::cuda
