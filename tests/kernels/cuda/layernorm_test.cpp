// The GPU residual add + LayerNorm against its CPU twin (kernels/cpu/layernorm.h): the residual
// sum bit for bit, the LayerNorm of the bf16 residual within fp32 statistics and bf16 rounding,
// every combination of absent operands and the in-place residual, widths with and without the
// 16-byte vector path (768, 8 vs 100, 3, 1), and the backward's accumulation and determinism; the
// plain LayerNorm and the residual add alone.
#include "kernels/cuda/layernorm.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/cpu/layernorm.h"

namespace loom {
namespace {

using testing::all_close;
using testing::bf16_rounded;
using testing::bf16_upload;
using testing::gpu;
using testing::random_floats;

// Statistics: fp32 sums over C <= 768 in another order than the CPU's (its variance in double):
// mean within rtol/atol 1e-5, rstd within rtol 1e-4 (C * 2^-24 ~ 5e-5 on the variance).
// out and dresidual are rounded to bf16 once: half an ulp is <= 2^-9 relative, 1 ulp <= 2^-8 when
// the fp32 values straddle a rounding boundary, so rtol 5e-3; atol 1e-3 for out (the statistics'
// error times |norm| <= 4 and |weight| <= 1.5, where out cancels to near zero) and 1e-4 for
// dresidual (fp32 row means of C terms).
// dweight, dbias: fp32 sums over N <= 4109 rows of terms <= ~4 in magnitude, in chunk order vs the
// CPU's: random-walk error ~ sqrt(N) * 2^-24 * |sum| << 1e-3: rtol 1e-4, atol 1e-3.
constexpr double kMeanTol = 1e-5;
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

TEST(LayerNormCudaTest, ForwardMatchesCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  cuda::Context& ctx = gpu();
  for (const Size& s : kSizes) {
    const int N = s.N, C = s.C;
    const size_t n = static_cast<size_t>(N) * C;
    // An offset so that the mean is not ~0 and the centring matters.
    const std::vector<float> residual = bf16_rounded(random_floats(n, 1, 0.5f, 2.5f));
    const std::vector<float> delta = bf16_rounded(random_floats(n, 2));
    const std::vector<float> delta_bias = bf16_rounded(random_floats(static_cast<size_t>(C), 3));
    const std::vector<float> weight = bf16_rounded(random_floats(static_cast<size_t>(C), 4, 0.5f, 1.5f));
    const std::vector<float> bias = bf16_rounded(random_floats(static_cast<size_t>(C), 5));
    Tensor d_delta = bf16_upload(delta, Shape{N, C});
    Tensor d_delta_bias = bf16_upload(delta_bias, Shape{C});
    Tensor d_weight = bf16_upload(weight, Shape{C});
    Tensor d_bias = bf16_upload(bias, Shape{C});
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
        Tensor d_mean = cuda::device_empty(ctx, Shape{N}, DType::kF32);
        Tensor d_rstd = cuda::device_empty(ctx, Shape{N}, DType::kF32);
        kernels::cuda::residual_layernorm_forward(
            d_residual_out.bf16_data(), d_out.bf16_data(), d_mean.f32(), d_rstd.f32(),
            has_residual ? d_residual.bf16_data() : nullptr,
            has_delta ? d_delta.bf16_data() : nullptr,
            has_delta_bias ? d_delta_bias.bf16_data() : nullptr, d_weight.bf16_data(),
            d_bias.bf16_data(), N, C, ctx.stream());

        // The twin's fp32 residual sum, rounded as the GPU stores it: the same bits.
        std::vector<float> residual_out(n), out(n), mean(static_cast<size_t>(N)), rstd(static_cast<size_t>(N));
        kernels::cpu::residual_layernorm_forward(
            residual_out.data(), out.data(), mean.data(), rstd.data(),
            has_residual ? residual.data() : nullptr, has_delta ? delta.data() : nullptr,
            has_delta_bias ? delta_bias.data() : nullptr, weight.data(), bias.data(), N, C);
        const std::vector<float> got_residual = cuda::download_floats(ctx, d_residual_out);
        EXPECT_TRUE(all_close(got_residual, bf16_rounded(residual_out), 0.0, 0.0));

        // The LayerNorm normalises the bf16 residual (what the backward sees).
        kernels::cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), got_residual.data(),
                                        weight.data(), bias.data(), N, C);
        EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_out), out, kBf16Rtol, kOutAtol));
        EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_mean), mean, kMeanTol, kMeanTol));
        EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_rstd), rstd, kRstdRtol, 0.0));
      }
    }
  }
}

TEST(LayerNormCudaTest, ForwardWithoutStatistics) {
  LOOM_SKIP_WITHOUT_GPU();
  cuda::Context& ctx = gpu();
  const int N = 9, C = 64;
  const std::vector<float> x = bf16_rounded(random_floats(static_cast<size_t>(N) * C, 6));
  const std::vector<float> weight = bf16_rounded(random_floats(static_cast<size_t>(C), 7));
  const std::vector<float> bias = bf16_rounded(random_floats(static_cast<size_t>(C), 8));
  Tensor d_x = bf16_upload(x, Shape{N, C});
  Tensor d_weight = bf16_upload(weight, Shape{C});
  Tensor d_bias = bf16_upload(bias, Shape{C});
  Tensor d_residual = cuda::device_empty(ctx, Shape{N, C}, DType::kBF16);
  Tensor d_out[2] = {cuda::device_empty(ctx, Shape{N, C}, DType::kBF16),
                     cuda::device_empty(ctx, Shape{N, C}, DType::kBF16)};
  Tensor d_mean = cuda::device_empty(ctx, Shape{N}, DType::kF32);
  Tensor d_rstd = cuda::device_empty(ctx, Shape{N}, DType::kF32);
  kernels::cuda::residual_layernorm_forward(d_residual.bf16_data(), d_out[0].bf16_data(),
                                            d_mean.f32(), d_rstd.f32(), d_x.bf16_data(), nullptr,
                                            nullptr, d_weight.bf16_data(), d_bias.bf16_data(), N,
                                            C, ctx.stream());
  kernels::cuda::residual_layernorm_forward(d_residual.bf16_data(), d_out[1].bf16_data(), nullptr,
                                            nullptr, d_x.bf16_data(), nullptr, nullptr,
                                            d_weight.bf16_data(), d_bias.bf16_data(), N, C,
                                            ctx.stream());
  const std::vector<float> a = cuda::download_floats(ctx, d_out[0]);
  const std::vector<float> b = cuda::download_floats(ctx, d_out[1]);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), sizeof(float) * a.size()));
}

// The plain LayerNorm is the fused kernel with nothing to add: the same bits as the fused call
// with residual_in alone, and the input left as it was.
TEST(LayerNormCudaTest, PlainForwardMatchesFusedAndCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  cuda::Context& ctx = gpu();
  for (const Size& s : kSizes) {
    const int N = s.N, C = s.C;
    SCOPED_TRACE(::testing::Message() << "N=" << N << " C=" << C);
    const size_t n = static_cast<size_t>(N) * C;
    const std::vector<float> x = bf16_rounded(random_floats(n, 20, 0.5f, 2.5f));
    const std::vector<float> weight = bf16_rounded(random_floats(static_cast<size_t>(C), 21, 0.5f, 1.5f));
    const std::vector<float> bias = bf16_rounded(random_floats(static_cast<size_t>(C), 22));
    Tensor d_x = bf16_upload(x, Shape{N, C});
    Tensor d_weight = bf16_upload(weight, Shape{C});
    Tensor d_bias = bf16_upload(bias, Shape{C});
    Tensor d_residual = cuda::device_empty(ctx, Shape{N, C}, DType::kBF16);
    Tensor d_out[2] = {cuda::device_empty(ctx, Shape{N, C}, DType::kBF16),
                       cuda::device_empty(ctx, Shape{N, C}, DType::kBF16)};
    Tensor d_mean = cuda::device_empty(ctx, Shape{N}, DType::kF32);
    Tensor d_rstd = cuda::device_empty(ctx, Shape{N}, DType::kF32);
    kernels::cuda::layernorm_forward(d_out[0].bf16_data(), d_mean.f32(), d_rstd.f32(), d_x.bf16_data(),
                                     d_weight.bf16_data(), d_bias.bf16_data(), N, C, ctx.stream());
    const std::vector<float> mean = cuda::download_floats(ctx, d_mean);
    const std::vector<float> rstd = cuda::download_floats(ctx, d_rstd);
    kernels::cuda::residual_layernorm_forward(d_residual.bf16_data(), d_out[1].bf16_data(), d_mean.f32(),
                                              d_rstd.f32(), d_x.bf16_data(), nullptr, nullptr,
                                              d_weight.bf16_data(), d_bias.bf16_data(), N, C, ctx.stream());
    const std::vector<float> plain = cuda::download_floats(ctx, d_out[0]);
    const std::vector<float> fused = cuda::download_floats(ctx, d_out[1]);
    EXPECT_EQ(0, std::memcmp(plain.data(), fused.data(), sizeof(float) * n));
    EXPECT_EQ(0, std::memcmp(mean.data(), cuda::download_floats(ctx, d_mean).data(), sizeof(float) * mean.size()));
    EXPECT_EQ(0, std::memcmp(rstd.data(), cuda::download_floats(ctx, d_rstd).data(), sizeof(float) * rstd.size()));
    EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_x), x, 0.0, 0.0));

    std::vector<float> out(n), expected_mean(static_cast<size_t>(N)), expected_rstd(static_cast<size_t>(N));
    kernels::cpu::layernorm_forward(out.data(), expected_mean.data(), expected_rstd.data(), x.data(),
                                    weight.data(), bias.data(), N, C);
    EXPECT_TRUE(all_close(plain, out, kBf16Rtol, kOutAtol));
    EXPECT_TRUE(all_close(mean, expected_mean, kMeanTol, kMeanTol));
    EXPECT_TRUE(all_close(rstd, expected_rstd, kRstdRtol, 0.0));
  }
}

// The residual add alone: the twin's fp32 sum in the same order, rounded once: the same bits, for
// every combination of absent operands and in place.
TEST(LayerNormCudaTest, ResidualAddMatchesCpuExactly) {
  LOOM_SKIP_WITHOUT_GPU();
  cuda::Context& ctx = gpu();
  for (const Size& s : kSizes) {
    const int N = s.N, C = s.C;
    const size_t n = static_cast<size_t>(N) * C;
    const std::vector<float> a = bf16_rounded(random_floats(n, 30));
    const std::vector<float> b = bf16_rounded(random_floats(n, 31));
    const std::vector<float> bias = bf16_rounded(random_floats(static_cast<size_t>(C), 32));
    Tensor d_b = bf16_upload(b, Shape{N, C});
    Tensor d_bias = bf16_upload(bias, Shape{C});
    for (int variant = 0; variant < 8; ++variant) {
      const bool has_a = (variant & 1) != 0, has_b = (variant & 2) != 0, has_bias = (variant & 4) != 0;
      for (bool in_place : {false, true}) {
        if (in_place && !has_a) continue;
        SCOPED_TRACE(::testing::Message() << "N=" << N << " C=" << C << " a=" << has_a << " b=" << has_b
                                          << " bias=" << has_bias << " in_place=" << in_place);
        Tensor d_a = bf16_upload(a, Shape{N, C});
        Tensor d_out = in_place ? d_a : bf16_upload(testing::random_floats(n, 33), Shape{N, C});
        kernels::cuda::residual_add(d_out.bf16_data(), has_a ? d_a.bf16_data() : nullptr,
                                    has_b ? d_b.bf16_data() : nullptr, has_bias ? d_bias.bf16_data() : nullptr,
                                    N, C, ctx.stream());
        std::vector<float> expected(n);
        kernels::cpu::residual_add(expected.data(), has_a ? a.data() : nullptr, has_b ? b.data() : nullptr,
                                   has_bias ? bias.data() : nullptr, N, C);
        EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_out), bf16_rounded(expected), 0.0, 0.0));
      }
    }
  }
}

TEST(LayerNormCudaTest, BackwardMatchesCpuAccumulatesAndIsDeterministic) {
  LOOM_SKIP_WITHOUT_GPU();
  cuda::Context& ctx = gpu();
  for (const Size& s : kSizes) {
    const int N = s.N, C = s.C;
    SCOPED_TRACE(::testing::Message() << "N=" << N << " C=" << C);
    const size_t n = static_cast<size_t>(N) * C;
    const std::vector<float> x = bf16_rounded(random_floats(n, 10, 0.5f, 2.5f));
    const std::vector<float> weight = bf16_rounded(random_floats(static_cast<size_t>(C), 11, 0.5f, 1.5f));
    const std::vector<float> bias = bf16_rounded(random_floats(static_cast<size_t>(C), 12));
    const std::vector<float> dout = bf16_rounded(random_floats(n, 13));
    const std::vector<float> dresidual0 = bf16_rounded(random_floats(n, 14));
    const std::vector<float> dweight0 = random_floats(static_cast<size_t>(C), 15);
    const std::vector<float> dbias0 = random_floats(static_cast<size_t>(C), 16);
    Tensor d_x = bf16_upload(x, Shape{N, C});
    Tensor d_weight = bf16_upload(weight, Shape{C});
    Tensor d_bias = bf16_upload(bias, Shape{C});
    Tensor d_dout = bf16_upload(dout, Shape{N, C});
    Tensor d_residual = cuda::device_empty(ctx, Shape{N, C}, DType::kBF16);
    Tensor d_out = cuda::device_empty(ctx, Shape{N, C}, DType::kBF16);
    Tensor d_mean = cuda::device_empty(ctx, Shape{N}, DType::kF32);
    Tensor d_rstd = cuda::device_empty(ctx, Shape{N}, DType::kF32);
    kernels::cuda::residual_layernorm_forward(d_residual.bf16_data(), d_out.bf16_data(),
                                              d_mean.f32(), d_rstd.f32(), d_x.bf16_data(), nullptr,
                                              nullptr, d_weight.bf16_data(), d_bias.bf16_data(), N,
                                              C, ctx.stream());
    const size_t scratch_floats = kernels::cuda::layernorm_backward_scratch_floats(N, C);
    Tensor d_scratch =
        cuda::device_empty(ctx, Shape{static_cast<int64_t>(scratch_floats)}, DType::kF32);

    std::vector<float> dresidual[2], dweight[2], dbias[2];
    for (int run = 0; run < 2; ++run) {
      Tensor d_dresidual = bf16_upload(dresidual0, Shape{N, C});
      Tensor d_dweight = cuda::upload(ctx, dweight0, Shape{C});
      Tensor d_dbias = cuda::upload(ctx, dbias0, Shape{C});
      kernels::cuda::layernorm_backward(d_dresidual.bf16_data(), d_dweight.f32(), d_dbias.f32(),
                                        d_dout.bf16_data(), d_x.bf16_data(), d_weight.bf16_data(),
                                        d_mean.f32(), d_rstd.f32(), N, C, d_scratch.f32(),
                                        ctx.stream());
      dresidual[run] = cuda::download_floats(ctx, d_dresidual);
      dweight[run] = cuda::download_floats(ctx, d_dweight);
      dbias[run] = cuda::download_floats(ctx, d_dbias);
    }
    // The twin with the GPU's statistics, so that only the backward's arithmetic is compared.
    const std::vector<float> mean = cuda::download_floats(ctx, d_mean);
    const std::vector<float> rstd = cuda::download_floats(ctx, d_rstd);
    std::vector<float> expected_dresidual = dresidual0, expected_dweight = dweight0,
                       expected_dbias = dbias0;
    kernels::cpu::layernorm_backward(expected_dresidual.data(), expected_dweight.data(),
                                     expected_dbias.data(), dout.data(), x.data(), weight.data(),
                                     mean.data(), rstd.data(), N, C);
    EXPECT_TRUE(all_close(dresidual[0], expected_dresidual, kBf16Rtol, kDresidualAtol));
    EXPECT_TRUE(all_close(dweight[0], expected_dweight, kParamRtol, kParamAtol));
    EXPECT_TRUE(all_close(dbias[0], expected_dbias, kParamRtol, kParamAtol));
    EXPECT_EQ(0, std::memcmp(dresidual[0].data(), dresidual[1].data(), sizeof(float) * n));
    EXPECT_EQ(0, std::memcmp(dweight[0].data(), dweight[1].data(), sizeof(float) * dweight[0].size()));
    EXPECT_EQ(0, std::memcmp(dbias[0].data(), dbias[1].data(), sizeof(float) * dbias[0].size()));
  }
}

}  // namespace
}  // namespace loom
