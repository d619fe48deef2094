// Matmul with bias on the CPU, torch.nn.Linear's layout (weight is (OC, C)).
//
// The three products go to OpenBLAS sgemm: nothing hand-written comes close on a CPU, and sgemm's
// beta = 1 gives the accumulate-into-gradient contract for free. The bias is folded into the
// forward by seeding the output with bias rows. dbias is a sum over rows; threads split its columns
// into fixed blocks and each block sums rows in order, so the result does not depend on the
// thread count.
#include "kernels/cpu/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <cstring>

#include "core/base/check.h"

namespace loom::kernels::cpu {
namespace {

// Output columns per dbias work unit; fixed so the split never depends on the thread count.
constexpr int kColumnBlock = 64;

}  // namespace

void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N,
                    int C, int OC) {
  LOOM_CHECK(N > 0 && C > 0 && OC > 0, "matmul sizes must be positive: N", N, "C", C, "OC", OC);
  LOOM_CHECK(out != nullptr && inp != nullptr && weight != nullptr,
             "matmul_forward: out, inp and weight must be non-null");
  float beta = 0.0f;
  if (bias != nullptr) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; ++i) {
      std::memcpy(out + static_cast<long>(i) * OC, bias, sizeof(float) * static_cast<size_t>(OC));
    }
    beta = 1.0f;
  }
  // out (N, OC) = inp (N, C) @ weight^T (C, OC) + beta * out
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.0f, inp, C, weight, C, beta,
              out, OC);
}

void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int N, int C, int OC) {
  LOOM_CHECK(N > 0 && C > 0 && OC > 0, "matmul sizes must be positive: N", N, "C", C, "OC", OC);
  LOOM_CHECK(dout != nullptr, "matmul_backward: dout must be non-null");
  if (dinp != nullptr) {
    LOOM_CHECK(weight != nullptr, "matmul_backward: dinp wanted but weight is null");
    // dinp (N, C) += dout (N, OC) @ weight (OC, C)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f, dout, OC, weight, C,
                1.0f, dinp, C);
  }
  if (dweight != nullptr) {
    LOOM_CHECK(inp != nullptr, "matmul_backward: dweight wanted but inp is null");
    // dweight (OC, C) += dout^T (OC, N) @ inp (N, C)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f,
                dweight, C);
  }
  if (dbias != nullptr) {
    const int num_blocks = (OC + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static)
    for (int block = 0; block < num_blocks; ++block) {
      const int o0 = block * kColumnBlock;
      const int o1 = std::min(OC, o0 + kColumnBlock);
      float sum[kColumnBlock] = {};
      for (int i = 0; i < N; ++i) {
        const float* d = dout + static_cast<long>(i) * OC;  // (OC)
        for (int o = o0; o < o1; ++o) sum[o - o0] += d[o];
      }
      for (int o = o0; o < o1; ++o) dbias[o] += sum[o - o0];
    }
  }
}

}  // namespace loom::kernels::cpu
