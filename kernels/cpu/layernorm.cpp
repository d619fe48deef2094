// LayerNorm on the CPU.
//
// Rows are independent in the forward and in dinp, so threads split rows. The row statistics use
// `omp simd` reductions so the compiler may vectorise them (plain -O3 will not reorder a float
// sum); the variance is summed in double because it is cheap and removes any doubt for wide rows.
// dweight and dbias are sums over all rows: to keep them bit-for-bit independent of the thread
// count, rows are cut into a fixed set of chunks (depending on N only), each chunk sums into its
// own partial row, and the partials are added in chunk order.
#include "kernels/cpu/layernorm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/base/check.h"

namespace loom::kernels::cpu {
namespace {

// At most this many row chunks in the backward: enough to balance 16 threads, few enough that the
// partial sums (chunks x 2 x C floats) stay small.
constexpr int kMaxRowChunks = 64;

}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                       const float* weight, const float* bias, int N, int C) {
  LOOM_CHECK(N > 0 && C > 0, "layernorm sizes must be positive: N", N, "C", C);
  LOOM_CHECK(out != nullptr && inp != nullptr && weight != nullptr && bias != nullptr,
             "layernorm_forward: out, inp, weight and bias must be non-null");
  const float inv_C = 1.0f / static_cast<float>(C);
#pragma omp parallel for schedule(static)
  for (int i = 0; i < N; ++i) {
    const float* x = inp + static_cast<long>(i) * C;  // (C)
    float* y = out + static_cast<long>(i) * C;        // (C)
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int c = 0; c < C; ++c) sum += x[c];
    const float m = sum * inv_C;
    double var = 0.0;
#pragma omp simd reduction(+ : var)
    for (int c = 0; c < C; ++c) {
      const double d = static_cast<double>(x[c] - m);
      var += d * d;
    }
    const float s = static_cast<float>(1.0 / std::sqrt(var / C + kLayerNormEps));
    for (int c = 0; c < C; ++c) y[c] = (x[c] - m) * s * weight[c] + bias[c];
    if (mean != nullptr) mean[i] = m;
    if (rstd != nullptr) rstd[i] = s;
  }
}

void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean,
                        const float* rstd, int N, int C) {
  LOOM_CHECK(N > 0 && C > 0, "layernorm sizes must be positive: N", N, "C", C);
  LOOM_CHECK(dinp != nullptr && dweight != nullptr && dbias != nullptr && dout != nullptr &&
                 inp != nullptr && weight != nullptr && mean != nullptr && rstd != nullptr,
             "layernorm_backward: all pointers must be non-null");
  const int rows_per_chunk = (N + kMaxRowChunks - 1) / kMaxRowChunks;
  const int num_chunks = (N + rows_per_chunk - 1) / rows_per_chunk;
  std::vector<float> partial(static_cast<size_t>(num_chunks) * 2 * C, 0.0f);  // (chunks, 2, C)
  const float inv_C = 1.0f / static_cast<float>(C);

#pragma omp parallel for schedule(static)
  for (int chunk = 0; chunk < num_chunks; ++chunk) {
    float* chunk_dweight = partial.data() + static_cast<size_t>(chunk) * 2 * C;  // (C)
    float* chunk_dbias = chunk_dweight + C;                                      // (C)
    const int row_end = std::min(N, (chunk + 1) * rows_per_chunk);
    for (int i = chunk * rows_per_chunk; i < row_end; ++i) {
      const float* x = inp + static_cast<long>(i) * C;    // (C)
      const float* dy = dout + static_cast<long>(i) * C;  // (C)
      float* dx = dinp + static_cast<long>(i) * C;        // (C)
      const float m = mean[i];
      const float s = rstd[i];
      // dnorm = weight * dy; dx = s * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)).
      float dnorm_sum = 0.0f;
      float dnorm_norm_sum = 0.0f;
#pragma omp simd reduction(+ : dnorm_sum, dnorm_norm_sum)
      for (int c = 0; c < C; ++c) {
        const float norm = (x[c] - m) * s;
        const float dnorm = weight[c] * dy[c];
        dnorm_sum += dnorm;
        dnorm_norm_sum += dnorm * norm;
      }
      const float dnorm_mean = dnorm_sum * inv_C;
      const float dnorm_norm_mean = dnorm_norm_sum * inv_C;
      for (int c = 0; c < C; ++c) {
        const float norm = (x[c] - m) * s;
        const float dnorm = weight[c] * dy[c];
        chunk_dbias[c] += dy[c];
        chunk_dweight[c] += norm * dy[c];
        dx[c] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * s;
      }
    }
  }

#pragma omp parallel for schedule(static)
  for (int c = 0; c < C; ++c) {
    float dw = 0.0f;
    float db = 0.0f;
    for (int chunk = 0; chunk < num_chunks; ++chunk) {
      dw += partial[static_cast<size_t>(chunk) * 2 * C + c];
      db += partial[static_cast<size_t>(chunk) * 2 * C + C + c];
    }
    dweight[c] += dw;
    dbias[c] += db;
  }
}

void residual_add(float* out, const float* a, const float* b, const float* bias, int N, int C) {
  LOOM_CHECK(N > 0 && C > 0, "residual_add sizes must be positive: N", N, "C", C);
  LOOM_CHECK(out != nullptr, "residual_add: out must be non-null");
#pragma omp parallel for schedule(static)
  for (int i = 0; i < N; ++i) {
    const long row = static_cast<long>(i) * C;
    for (int c = 0; c < C; ++c) {
      float r = a != nullptr ? a[row + c] : 0.0f;
      if (b != nullptr) r += b[row + c];
      if (bias != nullptr) r += bias[c];
      out[row + c] = r;
    }
  }
}

void residual_layernorm_forward(float* residual_out, float* out, float* mean, float* rstd,
                                const float* residual_in, const float* delta,
                                const float* delta_bias, const float* weight, const float* bias,
                                int N, int C) {
  LOOM_CHECK(N > 0 && C > 0, "residual_layernorm sizes must be positive: N", N, "C", C);
  LOOM_CHECK(residual_out != nullptr && residual_out != out,
             "residual_layernorm_forward: residual_out must be non-null and distinct from out");
  residual_add(residual_out, residual_in, delta, delta_bias, N, C);
  layernorm_forward(out, mean, rstd, residual_out, weight, bias, N, C);
}

}  // namespace loom::kernels::cpu
