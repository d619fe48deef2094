// RMSNorm on the CPU.
//
// Rows are independent in the forward and in dinp, so threads split rows. The mean square is
// summed in double (cheap, and removes any doubt for wide rows). dweight is a sum over all rows:
// to keep it bit-for-bit independent of the thread count, rows are cut into a fixed set of chunks
// (depending on N only), each chunk sums into its own partial row, and the partials are added in
// chunk order (as layernorm.cpp does).
#include "kernels/cpu/rmsnorm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/base/check.h"
#include "kernels/cpu/layernorm.h"

namespace loom::kernels::cpu {
namespace {

// At most this many row chunks in the backward: enough to balance 16 threads, few enough that the
// partial sums (chunks x C floats) stay small.
constexpr int kMaxRowChunks = 64;

}  // namespace

void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, float eps,
                     int N, int C) {
  LOOM_CHECK(N > 0 && C > 0, "rmsnorm sizes must be positive: N", N, "C", C);
  LOOM_CHECK(out != nullptr && inp != nullptr && weight != nullptr,
             "rmsnorm_forward: out, inp and weight must be non-null");
  LOOM_CHECK(eps > 0.0f, "rmsnorm_forward: eps must be positive:", eps);
#pragma omp parallel for schedule(static)
  for (int i = 0; i < N; ++i) {
    const float* x = inp + static_cast<long>(i) * C;  // (C)
    float* y = out + static_cast<long>(i) * C;        // (C)
    double sumsq = 0.0;
#pragma omp simd reduction(+ : sumsq)
    for (int c = 0; c < C; ++c) {
      const double v = static_cast<double>(x[c]);
      sumsq += v * v;
    }
    const float s = static_cast<float>(1.0 / std::sqrt(sumsq / C + static_cast<double>(eps)));
    for (int c = 0; c < C; ++c) y[c] = x[c] * s * weight[c];
    if (rstd != nullptr) rstd[i] = s;
  }
}

void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int N, int C) {
  LOOM_CHECK(N > 0 && C > 0, "rmsnorm sizes must be positive: N", N, "C", C);
  LOOM_CHECK(dinp != nullptr && dweight != nullptr && dout != nullptr && inp != nullptr &&
                 weight != nullptr && rstd != nullptr,
             "rmsnorm_backward: all pointers must be non-null");
  const int rows_per_chunk = (N + kMaxRowChunks - 1) / kMaxRowChunks;
  const int num_chunks = (N + rows_per_chunk - 1) / rows_per_chunk;
  std::vector<float> partial(static_cast<size_t>(num_chunks) * C, 0.0f);  // (chunks, C)
  const float inv_C = 1.0f / static_cast<float>(C);

#pragma omp parallel for schedule(static)
  for (int chunk = 0; chunk < num_chunks; ++chunk) {
    float* chunk_dweight = partial.data() + static_cast<size_t>(chunk) * C;  // (C)
    const int row_end = std::min(N, (chunk + 1) * rows_per_chunk);
    for (int i = chunk * rows_per_chunk; i < row_end; ++i) {
      const float* x = inp + static_cast<long>(i) * C;    // (C)
      const float* dy = dout + static_cast<long>(i) * C;  // (C)
      float* dx = dinp + static_cast<long>(i) * C;        // (C)
      const float s = rstd[i];
      // dnorm = weight * dy; dx = s * (dnorm - norm * mean(dnorm * norm)).
      float dnorm_norm_sum = 0.0f;
#pragma omp simd reduction(+ : dnorm_norm_sum)
      for (int c = 0; c < C; ++c) dnorm_norm_sum += weight[c] * dy[c] * (x[c] * s);
      const float dnorm_norm_mean = dnorm_norm_sum * inv_C;
      for (int c = 0; c < C; ++c) {
        const float norm = x[c] * s;
        const float dnorm = weight[c] * dy[c];
        chunk_dweight[c] += norm * dy[c];
        dx[c] += (dnorm - norm * dnorm_norm_mean) * s;
      }
    }
  }

#pragma omp parallel for schedule(static)
  for (int c = 0; c < C; ++c) {
    float dw = 0.0f;
    for (int chunk = 0; chunk < num_chunks; ++chunk) dw += partial[static_cast<size_t>(chunk) * C + c];
    dweight[c] += dw;
  }
}

void residual_rmsnorm_forward(float* residual_out, float* out, float* rstd,
                              const float* residual_in, const float* delta,
                              const float* delta_bias, const float* weight, float eps, int N,
                              int C) {
  LOOM_CHECK(N > 0 && C > 0, "residual_rmsnorm sizes must be positive: N", N, "C", C);
  LOOM_CHECK(residual_out != nullptr && residual_out != out,
             "residual_rmsnorm_forward: residual_out must be non-null and distinct from out");
  residual_add(residual_out, residual_in, delta, delta_bias, N, C);
  rmsnorm_forward(out, rstd, residual_out, weight, eps, N, C);
}

}  // namespace loom::kernels::cpu
