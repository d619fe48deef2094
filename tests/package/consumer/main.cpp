// Uses an installed Loom from outside: a config parsed and overridden (the generated protobuf
// code), a tensor and a CPU matmul (OpenBLAS, OpenMP), a UserError thrown across the library,
// the version, and in a CUDA build the CUDA parts linked (CUDA runtime, cuBLAS, NCCL) and run as
// far as a machine without a GPU allows. Prints one line per part for
// tests/package/find_package_test.sh to check.
#include <cstdio>
#include <vector>

#include "core/base/check.h"
#include "core/base/version.h"
#include "core/config.h"
#include "core/tensor.h"
#include "kernels/cpu/matmul.h"
#ifdef LOOM_HAS_CUDA
#include "core/base/cuda/check.h"
#include "kernels/cuda/gelu.h"
#include "parallel/nccl_communicator.h"
#endif

int main() {
  loom::config::RunConfig config = loom::parse_config_text("model { n_layer: 3 }", "<consumer>");
  loom::apply_config_override(config, "model.n_embd=64");
  std::printf("config: n_layer=%d n_embd=%d\n", config.model().n_layer(), config.model().n_embd());

  // (2, 3) @ (2, 3)^T: out[i][j] = row i of inp . row j of weight.
  const loom::Tensor inp = loom::Tensor::zeros({2, 3});
  const loom::Tensor weight = loom::Tensor::zeros({2, 3});
  const loom::Tensor out = loom::Tensor::zeros({2, 2});
  inp.fill(1.0f);
  weight.fill(2.0f);
  loom::kernels::cpu::matmul_forward(out.f32(), inp.f32(), weight.f32(), nullptr, 2, 3, 2);
  std::printf("matmul: %g %g %g %g\n", out.f32()[0], out.f32()[1], out.f32()[2], out.f32()[3]);

  try {
    loom::parse_config_text("model { n_layers: 3 }", "<consumer>");
    std::printf("user error: none\n");
  } catch (const loom::UserError& e) {
    std::printf("user error: %s\n", e.what());
  }
  std::printf("version: %s\n", loom::version_line().c_str());

#ifdef LOOM_HAS_CUDA
  // Taken, not called: a kernel launcher (an object nvcc compiled) and the NCCL communicator
  // must link. The error texts come from the CUDA runtime and cuBLAS without a device.
  void (*volatile gelu)(loom::bf16*, const loom::bf16*, const loom::bf16*, int64_t, cudaStream_t) =
      &loom::kernels::cuda::gelu_backward;
  auto* volatile nccl = &loom::parallel::NcclCommunicator::create;
  std::printf("cuda: linked %d; %s; %s\n", gelu != nullptr && nccl != nullptr,
              loom::cuda::error_text(cudaErrorInvalidValue).c_str(),
              loom::cuda::error_text(CUBLAS_STATUS_NOT_INITIALIZED).c_str());
#else
  std::printf("cuda: not built\n");
#endif
  return 0;
}
