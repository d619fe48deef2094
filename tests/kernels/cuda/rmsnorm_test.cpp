// The GPU residual add + RMSNorm against its CPU twin (kernels/cpu/rmsnorm.h): the residual sum
// bit for bit, the RMSNorm of the bf16 residual within fp32 statistics and bf16 rounding, every
// combination of absent operands and the in-place residual, widths with and without the 16-byte
// vector path (768, 8 vs 100, 3, 1), and the backward's accumulation and determinism; the plain
// RMSNorm.
#include "kernels/cuda/rmsnorm.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/cpu/rmsnorm.h"

namespace loom {
namespace {

using testing::all_close;
using testing::bf16_rounded;
using testing::bf16_upload;
using testing::gpu;
using testing::random_floats;

constexpr float kEps = 1e-6f;  // Llama's rms_norm_eps

// Statistic: an fp32 sum of squares over C <= 768 in another order than the CPU's (in double):
// rstd within rtol 1e-4 (C * 2^-24 ~ 5e-5 on the mean square).
// out and dresidual are rounded to bf16 once: half an ulp is <= 2^-9 relative, 1 ulp <= 2^-8 when
// the fp32 values straddle a rounding boundary, so rtol 5e-3; atol 1e-3 for out (rstd's error
// times |norm| <= 4 and |weight| <= 1.5) and 1e-4 for dresidual (an fp32 row mean of C terms).
// dweight: fp32 sums over N <= 4109 rows of terms <= ~4 in magnitude, in chunk order vs the CPU's:
// random-walk error ~ sqrt(N) * 2^-24 * |sum| << 1e-3: rtol 1e-4, atol 1e-3.
constexpr double kRstdRtol = 1e-4;
constexpr double kBf16Rtol = 5e-3;
constexpr double kOutAtol = 1e-3;
constexpr double kDresidualAtol = 1e-4;
constexpr double kParamRtol = 1e-4;
constexpr double kParamAtol = 1e-3;

struct Size {
  int N, C;
};
const Size kSizes[] = {{1, 768}, {7, 100}, {4096 + 13, 768}, {13, 3}, {5, 8}, {3, 1}};

TEST(RmsNormCudaTest, ForwardMatchesCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  cuda::Context& ctx = gpu();
  for (const Size& s : kSizes) {
    const int N = s.N, C = s.C;
    const size_t n = static_cast<size_t>(N) * C;
    const std::vector<float> residual = bf16_rounded(random_floats(n, 1, -2.0f, 2.0f));
    const std::vector<float> delta = bf16_rounded(random_floats(n, 2));
    const std::vector<float> delta_bias = bf16_rounded(random_floats(static_cast<size_t>(C), 3));
    const std::vector<float> weight = bf16_rounded(random_floats(static_cast<size_t>(C), 4, 0.5f, 1.5f));
    Tensor d_delta = bf16_upload(delta, Shape{N, C});
    Tensor d_delta_bias = bf16_upload(delta_bias, Shape{C});
    Tensor d_weight = bf16_upload(weight, Shape{C});
    for (int variant = 0; variant < 8; ++variant) {
      const bool has_residual = (variant & 1) != 0;
      const bool has_delta = (variant & 2) != 0;
      const bool has_delta_bias = (variant & 4) != 0;
      if (!has_residual && !has_delta) continue;
      for (bool in_place : {false, true}) {
        if (in_place && !has_residual) continue;
        SCOPED_TRACE(::testing::Message() << "N=" << N << " C=" << C << " residual=" << has_residual
                                          << " delta=" << has_delta << " delta_bias="
                                          << has_delta_bias << " in_place=" << in_place);
        Tensor d_residual = bf16_upload(residual, Shape{N, C});
        Tensor d_residual_out =
            in_place ? d_residual : cuda::device_empty(ctx, Shape{N, C}, DType::kBF16);
        Tensor d_out = cuda::device_empty(ctx, Shape{N, C}, DType::kBF16);
        Tensor d_rstd = cuda::device_empty(ctx, Shape{N}, DType::kF32);
        kernels::cuda::residual_rmsnorm_forward(
            d_residual_out.bf16_data(), d_out.bf16_data(), d_rstd.f32(),
            has_residual ? d_residual.bf16_data() : nullptr,
            has_delta ? d_delta.bf16_data() : nullptr,
            has_delta_bias ? d_delta_bias.bf16_data() : nullptr, d_weight.bf16_data(), kEps, N, C,
            ctx.stream());

        // The twin's fp32 residual sum, rounded as the GPU stores it: the same bits.
        std::vector<float> residual_out(n), out(n), rstd(static_cast<size_t>(N));
        kernels::cpu::residual_rmsnorm_forward(
            residual_out.data(), out.data(), rstd.data(), has_residual ? residual.data() : nullptr,
            has_delta ? delta.data() : nullptr, has_delta_bias ? delta_bias.data() : nullptr,
            weight.data(), kEps, N, C);
        const std::vector<float> got_residual = cuda::download_floats(ctx, d_residual_out);
        EXPECT_TRUE(all_close(got_residual, bf16_rounded(residual_out), 0.0, 0.0));

        // The RMSNorm normalises the bf16 residual (what the backward sees).
        kernels::cpu::rmsnorm_forward(out.data(), rstd.data(), got_residual.data(), weight.data(),
                                      kEps, N, C);
        EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_out), out, kBf16Rtol, kOutAtol));
        EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_rstd), rstd, kRstdRtol, 0.0));
      }
    }
  }
}

// The plain RMSNorm is the fused kernel with nothing to add: the same bits as the fused call with
// residual_in alone, the input left as it was, and rstd optional.
TEST(RmsNormCudaTest, PlainForwardMatchesFusedAndCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  cuda::Context& ctx = gpu();
  for (const Size& s : kSizes) {
    const int N = s.N, C = s.C;
    SCOPED_TRACE(::testing::Message() << "N=" << N << " C=" << C);
    const size_t n = static_cast<size_t>(N) * C;
    const std::vector<float> x = bf16_rounded(random_floats(n, 20, -2.0f, 2.0f));
    const std::vector<float> weight = bf16_rounded(random_floats(static_cast<size_t>(C), 21, 0.5f, 1.5f));
    Tensor d_x = bf16_upload(x, Shape{N, C});
    Tensor d_weight = bf16_upload(weight, Shape{C});
    Tensor d_residual = cuda::device_empty(ctx, Shape{N, C}, DType::kBF16);
    Tensor d_out[3] = {cuda::device_empty(ctx, Shape{N, C}, DType::kBF16),
                       cuda::device_empty(ctx, Shape{N, C}, DType::kBF16),
                       cuda::device_empty(ctx, Shape{N, C}, DType::kBF16)};
    Tensor d_rstd = cuda::device_empty(ctx, Shape{N}, DType::kF32);
    kernels::cuda::rmsnorm_forward(d_out[0].bf16_data(), d_rstd.f32(), d_x.bf16_data(),
                                   d_weight.bf16_data(), kEps, N, C, ctx.stream());
    const std::vector<float> rstd = cuda::download_floats(ctx, d_rstd);
    kernels::cuda::residual_rmsnorm_forward(d_residual.bf16_data(), d_out[1].bf16_data(),
                                            d_rstd.f32(), d_x.bf16_data(), nullptr, nullptr,
                                            d_weight.bf16_data(), kEps, N, C, ctx.stream());
    kernels::cuda::rmsnorm_forward(d_out[2].bf16_data(), nullptr, d_x.bf16_data(),
                                   d_weight.bf16_data(), kEps, N, C, ctx.stream());
    const std::vector<float> plain = cuda::download_floats(ctx, d_out[0]);
    const std::vector<float> fused = cuda::download_floats(ctx, d_out[1]);
    const std::vector<float> no_rstd = cuda::download_floats(ctx, d_out[2]);
    EXPECT_EQ(0, std::memcmp(plain.data(), fused.data(), sizeof(float) * n));
    EXPECT_EQ(0, std::memcmp(plain.data(), no_rstd.data(), sizeof(float) * n));
    EXPECT_EQ(0, std::memcmp(rstd.data(), cuda::download_floats(ctx, d_rstd).data(), sizeof(float) * rstd.size()));
    EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_x), x, 0.0, 0.0));

    std::vector<float> out(n), expected_rstd(static_cast<size_t>(N));
    kernels::cpu::rmsnorm_forward(out.data(), expected_rstd.data(), x.data(), weight.data(), kEps,
                                  N, C);
    EXPECT_TRUE(all_close(plain, out, kBf16Rtol, kOutAtol));
    EXPECT_TRUE(all_close(rstd, expected_rstd, kRstdRtol, 0.0));
  }
}

TEST(RmsNormCudaTest, BackwardMatchesCpuAccumulatesAndIsDeterministic) {
  LOOM_SKIP_WITHOUT_GPU();
  cuda::Context& ctx = gpu();
  for (const Size& s : kSizes) {
    const int N = s.N, C = s.C;
    SCOPED_TRACE(::testing::Message() << "N=" << N << " C=" << C);
    const size_t n = static_cast<size_t>(N) * C;
    const std::vector<float> x = bf16_rounded(random_floats(n, 10, -2.0f, 2.0f));
    const std::vector<float> weight = bf16_rounded(random_floats(static_cast<size_t>(C), 11, 0.5f, 1.5f));
    const std::vector<float> dout = bf16_rounded(random_floats(n, 13));
    const std::vector<float> dresidual0 = bf16_rounded(random_floats(n, 14));
    const std::vector<float> dweight0 = random_floats(static_cast<size_t>(C), 15);
    Tensor d_x = bf16_upload(x, Shape{N, C});
    Tensor d_weight = bf16_upload(weight, Shape{C});
    Tensor d_dout = bf16_upload(dout, Shape{N, C});
    Tensor d_out = cuda::device_empty(ctx, Shape{N, C}, DType::kBF16);
    Tensor d_rstd = cuda::device_empty(ctx, Shape{N}, DType::kF32);
    kernels::cuda::rmsnorm_forward(d_out.bf16_data(), d_rstd.f32(), d_x.bf16_data(),
                                   d_weight.bf16_data(), kEps, N, C, ctx.stream());
    const size_t scratch_floats = kernels::cuda::rmsnorm_backward_scratch_floats(N, C);
    Tensor d_scratch =
        cuda::device_empty(ctx, Shape{static_cast<int64_t>(scratch_floats)}, DType::kF32);

    std::vector<float> dresidual[2], dweight[2];
    for (int run = 0; run < 2; ++run) {
      Tensor d_dresidual = bf16_upload(dresidual0, Shape{N, C});
      Tensor d_dweight = cuda::upload(ctx, dweight0, Shape{C});
      kernels::cuda::rmsnorm_backward(d_dresidual.bf16_data(), d_dweight.f32(), d_dout.bf16_data(),
                                      d_x.bf16_data(), d_weight.bf16_data(), d_rstd.f32(), N, C,
                                      d_scratch.f32(), ctx.stream());
      dresidual[run] = cuda::download_floats(ctx, d_dresidual);
      dweight[run] = cuda::download_floats(ctx, d_dweight);
    }
    // The twin with the GPU's statistic, so that only the backward's arithmetic is compared.
    const std::vector<float> rstd = cuda::download_floats(ctx, d_rstd);
    std::vector<float> expected_dresidual = dresidual0, expected_dweight = dweight0;
    kernels::cpu::rmsnorm_backward(expected_dresidual.data(), expected_dweight.data(), dout.data(),
                                   x.data(), weight.data(), rstd.data(), N, C);
    EXPECT_TRUE(all_close(dresidual[0], expected_dresidual, kBf16Rtol, kDresidualAtol));
    EXPECT_TRUE(all_close(dweight[0], expected_dweight, kParamRtol, kParamAtol));
    EXPECT_EQ(0, std::memcmp(dresidual[0].data(), dresidual[1].data(), sizeof(float) * n));
    EXPECT_EQ(0, std::memcmp(dweight[0].data(), dweight[1].data(), sizeof(float) * dweight[0].size()));
  }
}

}  // namespace
}  // namespace loom
