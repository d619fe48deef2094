// The cuBLASLt Matmul against its CPU twin (kernels/cpu/matmul.h, OpenBLAS in fp32 on the same
// bf16-rounded inputs): forward with each epilogue (the GELU one also where OC is not a multiple
// of 8 and the fallback runs), backward dinp (overwritten, NaN-poisoned beforehand) and dweight
// (accumulated), shapes from one row to 4096 + 13 rows with odd widths, and gemm() with both
// operands transposed, alpha and beta.
#include "kernels/cuda/matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/cpu/gelu.h"
#include "kernels/cpu/matmul.h"

namespace loom {
namespace {

using testing::all_close;
using testing::bf16_rounded;
using testing::bf16_upload;
using testing::gpu;
using testing::poisoned;
using testing::random_floats;

// Products of bf16 values are exact in fp32; the sums over K run in another order (tensor-core
// tiles, perhaps split K) than OpenBLAS's: at most ~K * 2^-23 * max|partial sum| (|partials| <= ~30
// for K <= 4109 terms in [-1, 1]), so atol 1e-5 * K. bf16 outputs are rounded once (<= 2^-8
// relative, an ulp where the fp32 values straddle a rounding boundary): rtol 5e-3; fp32 dweight:
// rtol 1e-4. The GELU output adds the epilogue's own tanh approximation (or, in the fallback,
// gelu of the bf16-rounded pre: |gelu'| <= 1.13 times 2^-9 |pre|): rtol 1e-2, atol 1e-3 more.
constexpr double kBf16Rtol = 5e-3;
constexpr double kF32Rtol = 1e-4;
constexpr double kGeluRtol = 1e-2;
constexpr double kGeluAtol = 1e-3;
double sum_atol(int K) { return 1e-5 * K; }

struct Size {
  int N, C, OC;
};
const Size kSizes[] = {{1, 3, 5}, {7, 100, 24}, {7, 768, 2304}, {33, 64, 100}, {13, 24, 3},
                       {4096 + 13, 768, 2304}};

TEST(MatmulCudaTest, ForwardMatchesCpuWithEachEpilogue) {
  LOOM_SKIP_WITHOUT_GPU();
  cuda::Context& ctx = gpu();
  kernels::cuda::Matmul matmul(ctx.allocator());
  for (const Size& s : kSizes) {
    const int N = s.N, C = s.C, OC = s.OC;
    const std::vector<float> inp = bf16_rounded(random_floats(static_cast<size_t>(N) * C, 1));
    const std::vector<float> weight = bf16_rounded(random_floats(static_cast<size_t>(OC) * C, 2));
    const std::vector<float> bias = bf16_rounded(random_floats(static_cast<size_t>(OC), 3));
    Tensor d_inp = bf16_upload(inp, Shape{N, C});
    Tensor d_weight = bf16_upload(weight, Shape{OC, C});
    Tensor d_bias = bf16_upload(bias, Shape{OC});
    std::vector<float> plain(static_cast<size_t>(N) * OC), biased(plain.size()), gelu(plain.size());
    kernels::cpu::matmul_forward(plain.data(), inp.data(), weight.data(), nullptr, N, C, OC);
    kernels::cpu::matmul_forward(biased.data(), inp.data(), weight.data(), bias.data(), N, C, OC);
    kernels::cpu::gelu_forward(gelu.data(), biased.data(), static_cast<long>(gelu.size()));
    const double atol = sum_atol(C);

    for (int variant = 0; variant < 4; ++variant) {
      const auto epilogue = static_cast<kernels::cuda::Epilogue>(variant < 3 ? variant : 2);
      const bool save_pre = variant == 2;
      SCOPED_TRACE(::testing::Message() << "N=" << N << " C=" << C << " OC=" << OC << " epilogue="
                                        << variant << " pre=" << save_pre);
      Tensor d_out = cuda::upload(ctx, poisoned(plain.size()), Shape{N, OC}, DType::kBF16);
      Tensor d_pre = cuda::upload(ctx, poisoned(plain.size()), Shape{N, OC}, DType::kBF16);
      matmul.forward(d_out.bf16_data(), save_pre ? d_pre.bf16_data() : nullptr,
                     d_inp.bf16_data(), d_weight.bf16_data(),
                     epilogue == kernels::cuda::Epilogue::kNone ? nullptr : d_bias.bf16_data(), N,
                     C, OC, epilogue, ctx.stream());
      const std::vector<float> out = cuda::download_floats(ctx, d_out);
      if (epilogue == kernels::cuda::Epilogue::kNone) {
        EXPECT_TRUE(all_close(out, plain, kBf16Rtol, atol));
      } else if (epilogue == kernels::cuda::Epilogue::kBias) {
        EXPECT_TRUE(all_close(out, biased, kBf16Rtol, atol));
      } else {
        EXPECT_TRUE(all_close(out, gelu, kGeluRtol, atol + kGeluAtol));
        if (save_pre) {
          EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_pre), biased, kBf16Rtol, atol));
        }
      }
    }
  }
}

TEST(MatmulCudaTest, BackwardMatchesCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  cuda::Context& ctx = gpu();
  kernels::cuda::Matmul matmul(ctx.allocator());
  for (const Size& s : kSizes) {
    const int N = s.N, C = s.C, OC = s.OC;
    SCOPED_TRACE(::testing::Message() << "N=" << N << " C=" << C << " OC=" << OC);
    const std::vector<float> inp = bf16_rounded(random_floats(static_cast<size_t>(N) * C, 4));
    const std::vector<float> weight = bf16_rounded(random_floats(static_cast<size_t>(OC) * C, 5));
    const std::vector<float> dout = bf16_rounded(random_floats(static_cast<size_t>(N) * OC, 6));
    const std::vector<float> dweight0 = random_floats(static_cast<size_t>(OC) * C, 7);
    Tensor d_inp = bf16_upload(inp, Shape{N, C});
    Tensor d_weight = bf16_upload(weight, Shape{OC, C});
    Tensor d_dout = bf16_upload(dout, Shape{N, OC});
    Tensor d_dinp = cuda::upload(ctx, poisoned(inp.size()), Shape{N, C}, DType::kBF16);
    Tensor d_dweight = cuda::upload(ctx, dweight0, Shape{OC, C});
    matmul.backward(d_dinp.bf16_data(), d_dweight.f32(), d_dout.bf16_data(), d_inp.bf16_data(),
                    d_weight.bf16_data(), N, C, OC, ctx.stream());
    std::vector<float> dinp(inp.size(), 0.0f), dweight = dweight0;
    kernels::cpu::matmul_backward(dinp.data(), dweight.data(), nullptr, dout.data(), inp.data(),
                                  weight.data(), N, C, OC);
    EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_dinp), dinp, kBf16Rtol, sum_atol(OC)));
    EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_dweight), dweight, kF32Rtol, sum_atol(N)));

    // Each output alone; the second dweight call accumulates onto the first.
    matmul.backward(nullptr, d_dweight.f32(), d_dout.bf16_data(), d_inp.bf16_data(), nullptr, N, C,
                    OC, ctx.stream());
    kernels::cpu::matmul_backward(nullptr, dweight.data(), nullptr, dout.data(), inp.data(),
                                  weight.data(), N, C, OC);
    EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_dweight), dweight, kF32Rtol, 2 * sum_atol(N)));
  }
}

TEST(MatmulCudaTest, GemmTransposedWithAlphaAndBeta) {
  LOOM_SKIP_WITHOUT_GPU();
  cuda::Context& ctx = gpu();
  kernels::cuda::Matmul matmul(ctx.allocator());
  const int m = 37, n = 19, k = 40;
  // Column-major, both transposed: a stored (k, m), b stored (n, k).
  const std::vector<float> a = bf16_rounded(random_floats(static_cast<size_t>(k) * m, 8));
  const std::vector<float> b = bf16_rounded(random_floats(static_cast<size_t>(n) * k, 9));
  const std::vector<float> d0 = random_floats(static_cast<size_t>(m) * n, 10);
  std::vector<double> expected(d0.size());
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      double sum = 0;
      for (int p = 0; p < k; ++p) {
        sum += static_cast<double>(a[static_cast<size_t>(i) * k + p]) * b[static_cast<size_t>(p) * n + j];
      }
      expected[static_cast<size_t>(j) * m + i] = 0.5 * sum + 2.0 * d0[static_cast<size_t>(j) * m + i];
    }
  }
  Tensor d_a = bf16_upload(a, Shape{m, k});
  Tensor d_b = bf16_upload(b, Shape{k, n});
  Tensor d_d = cuda::upload(ctx, d0, Shape{n, m});
  matmul.gemm(d_d.raw(), DType::kF32, d_a.bf16_data(), d_b.bf16_data(), m, n, k, true, true, 0.5f,
              2.0f, ctx.stream());
  EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_d), expected, kF32Rtol, sum_atol(k)));
}

}  // namespace
}  // namespace loom
