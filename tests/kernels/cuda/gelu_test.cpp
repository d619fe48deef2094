// The GPU bias + GELU, GELU backward and bias_backward against their CPU twins
// (kernels/cpu/gelu.h): pre bit for bit, out and dinp within bf16 rounding, with and without bias
// and pre, in place, with even (bf16x2 path) and odd widths; bias_backward accumulating and
// deterministic.
#include "kernels/cuda/gelu.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/cpu/gelu.h"

namespace loom {
namespace {

using testing::all_close;
using testing::bf16_rounded;
using testing::bf16_upload;
using testing::gpu;
using testing::random_floats;

// pre: both sides add the same bf16 values in fp32 and round once: exact.
// out, dinp: the GPU's expf formula and the CPU's fast_exp one agree to a few fp32 ulp; the GPU
// rounds to bf16 once (<= 2^-8 relative, an ulp where the two fp32 values straddle a rounding
// boundary): rtol 5e-3; atol 1e-6 for values that are ~0 (gelu of large negative inputs).
// bias_backward: fp32 column sums of N <= 4109 terms in [-1, 1] in another order than the CPU's:
// ~sqrt(N) * 2^-24 * |sum| ~ 1e-5: rtol 1e-4, atol 1e-3.
constexpr double kBf16Rtol = 5e-3;
constexpr double kAtol = 1e-6;
constexpr double kSumRtol = 1e-4;
constexpr double kSumAtol = 1e-3;

struct Size {
  int N, C;
};
const Size kSizes[] = {{1, 3}, {7, 100}, {4096 + 13, 768}, {5, 7}, {3, 1}};

TEST(GeluCudaTest, BiasGeluForwardMatchesCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  cuda::Context& ctx = gpu();
  for (const Size& s : kSizes) {
    const int N = s.N, C = s.C;
    const size_t n = static_cast<size_t>(N) * C;
    const std::vector<float> inp = bf16_rounded(random_floats(n, 1, -6.0f, 6.0f));
    const std::vector<float> bias = bf16_rounded(random_floats(static_cast<size_t>(C), 2));
    Tensor d_bias = bf16_upload(bias, Shape{C});
    for (int variant = 0; variant < 8; ++variant) {
      const bool has_bias = (variant & 1) != 0;
      const bool save_pre = (variant & 2) != 0;
      const bool in_place = (variant & 4) != 0;  // out (and pre, if saved) alias inp
      SCOPED_TRACE(::testing::Message() << "N=" << N << " C=" << C << " bias=" << has_bias
                                        << " pre=" << save_pre << " in_place=" << in_place);
      Tensor d_inp = bf16_upload(inp, Shape{N, C});
      Tensor d_out = in_place ? d_inp : cuda::device_empty(ctx, Shape{N, C}, DType::kBF16);
      Tensor d_pre = in_place ? d_inp : cuda::device_empty(ctx, Shape{N, C}, DType::kBF16);
      if (in_place && save_pre) d_out = cuda::device_empty(ctx, Shape{N, C}, DType::kBF16);
      kernels::cuda::bias_gelu_forward(d_out.bf16_data(), save_pre ? d_pre.bf16_data() : nullptr,
                                       d_inp.bf16_data(), has_bias ? d_bias.bf16_data() : nullptr,
                                       N, C, ctx.stream());
      std::vector<float> out(n), pre(n);
      kernels::cpu::bias_gelu_forward(out.data(), pre.data(), inp.data(),
                                      has_bias ? bias.data() : nullptr, N, C);
      EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_out), out, kBf16Rtol, kAtol));
      if (save_pre) {
        EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_pre), bf16_rounded(pre), 0.0, 0.0));
      }
    }
  }
}

TEST(GeluCudaTest, BackwardMatchesCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  cuda::Context& ctx = gpu();
  for (const Size& s : kSizes) {
    for (bool in_place : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "N=" << s.N << " C=" << s.C << " in_place=" << in_place);
      const int64_t n = static_cast<int64_t>(s.N) * s.C;
      const std::vector<float> pre = bf16_rounded(random_floats(static_cast<size_t>(n), 3, -6.0f, 6.0f));
      const std::vector<float> dout = bf16_rounded(random_floats(static_cast<size_t>(n), 4));
      Tensor d_pre = bf16_upload(pre, Shape{n});
      Tensor d_dout = bf16_upload(dout, Shape{n});
      Tensor d_dinp = in_place ? d_dout : cuda::device_empty(ctx, Shape{n}, DType::kBF16);
      kernels::cuda::gelu_backward(d_dinp.bf16_data(), d_pre.bf16_data(), d_dout.bf16_data(), n,
                                   ctx.stream());
      std::vector<float> expected(static_cast<size_t>(n), 0.0f);  // the twin accumulates
      kernels::cpu::gelu_backward(expected.data(), pre.data(), dout.data(), n);
      EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_dinp), expected, kBf16Rtol, kAtol));
    }
  }
}

TEST(GeluCudaTest, ExtremeInputsStayFinite) {
  LOOM_SKIP_WITHOUT_GPU();
  cuda::Context& ctx = gpu();
  const std::vector<float> x =
      bf16_rounded({0.0f, -0.0f, 20.0f, -20.0f, 1e4f, -1e4f, 1e20f, -1e20f, 3e38f, -3e38f});
  const int n = static_cast<int>(x.size());
  Tensor d_x = bf16_upload(x, Shape{n});
  Tensor d_out = cuda::device_empty(ctx, Shape{n}, DType::kBF16);
  Tensor d_ones = bf16_upload(std::vector<float>(x.size(), 1.0f), Shape{n});
  Tensor d_grad = cuda::device_empty(ctx, Shape{n}, DType::kBF16);
  kernels::cuda::bias_gelu_forward(d_out.bf16_data(), nullptr, d_x.bf16_data(), nullptr, 1, n,
                                   ctx.stream());
  kernels::cuda::gelu_backward(d_grad.bf16_data(), d_x.bf16_data(), d_ones.bf16_data(), n,
                               ctx.stream());
  std::vector<float> expected_out(x.size()), expected_grad(x.size(), 0.0f);
  const std::vector<float> ones(x.size(), 1.0f);
  kernels::cpu::gelu_forward(expected_out.data(), x.data(), n);
  kernels::cpu::gelu_backward(expected_grad.data(), x.data(), ones.data(), n);
  EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_out), bf16_rounded(expected_out), 0.0, kAtol));
  EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_grad), bf16_rounded(expected_grad), 0.0, kAtol));
}

TEST(GeluCudaTest, BiasBackwardMatchesCpuAccumulatesAndIsDeterministic) {
  LOOM_SKIP_WITHOUT_GPU();
  cuda::Context& ctx = gpu();
  for (const Size& s : kSizes) {
    const int N = s.N, C = s.C;
    SCOPED_TRACE(::testing::Message() << "N=" << N << " C=" << C);
    const std::vector<float> dout = bf16_rounded(random_floats(static_cast<size_t>(N) * C, 5));
    const std::vector<float> dbias0 = random_floats(static_cast<size_t>(C), 6);
    Tensor d_dout = bf16_upload(dout, Shape{N, C});
    Tensor d_scratch = cuda::device_empty(
        ctx, Shape{static_cast<int64_t>(kernels::cuda::bias_backward_scratch_floats(N, C))},
        DType::kF32);
    std::vector<float> dbias[2];
    for (int run = 0; run < 2; ++run) {
      Tensor d_dbias = cuda::upload(ctx, dbias0, Shape{C});
      kernels::cuda::bias_backward(d_dbias.f32(), d_dout.bf16_data(), N, C, d_scratch.f32(),
                                   ctx.stream());
      dbias[run] = cuda::download_floats(ctx, d_dbias);
    }
    std::vector<float> expected = dbias0;
    kernels::cpu::bias_backward(expected.data(), dout.data(), N, C);
    EXPECT_TRUE(all_close(dbias[0], expected, kSumRtol, kSumAtol));
    EXPECT_EQ(0, std::memcmp(dbias[0].data(), dbias[1].data(), sizeof(float) * dbias[0].size()));
  }
}

}  // namespace
}  // namespace loom
