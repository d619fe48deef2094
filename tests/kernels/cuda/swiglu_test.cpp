// The GPU SwiGLU forward and backward against their CPU twins (kernels/cpu/swiglu.h): within
// bf16 rounding, with even (bf16x2 path) and odd widths, dgu overwritten, extreme gates finite.
#include "kernels/cuda/swiglu.h"

#include <gtest/gtest.h>

#include <vector>

#include "cuda_test_util.h"
#include "kernels/cpu/swiglu.h"

namespace loom {
namespace {

using testing::all_close;
using testing::bf16_rounded;
using testing::bf16_upload;
using testing::gpu;
using testing::random_floats;

// The GPU's expf formula and the CPU's fast_exp one agree to a few fp32 ulp on the same bf16
// inputs; the GPU rounds each output to bf16 once (<= 2^-8 relative, an ulp where the two fp32
// values straddle a rounding boundary): rtol 5e-3; atol 1e-6 for values that are ~0. dgate also
// passes zero where silu' does (g ~ -1.28: 1 + g e s cancels to ~2^-23 on each side, times
// |dout * up| <= 8): atol 2e-6 there.
constexpr double kBf16Rtol = 5e-3;
constexpr double kAtol = 1e-6;
constexpr double kBackwardAtol = 2e-6;

struct Size {
  int N, F;
};
const Size kSizes[] = {{1, 1}, {1, 3}, {7, 100}, {4096 + 13, 688}, {5, 7}, {3, 1}};

TEST(SwiGluCudaTest, ForwardMatchesCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  cuda::Context& ctx = gpu();
  for (const Size& s : kSizes) {
    SCOPED_TRACE(::testing::Message() << "N=" << s.N << " F=" << s.F);
    const std::vector<float> gu = bf16_rounded(random_floats(static_cast<size_t>(s.N) * 2 * s.F, 1, -8.0f, 8.0f));
    Tensor d_gu = bf16_upload(gu, Shape{s.N, 2 * s.F});
    Tensor d_out = cuda::device_empty(ctx, Shape{s.N, s.F}, DType::kBF16);
    kernels::cuda::swiglu_forward(d_out.bf16_data(), d_gu.bf16_data(), s.N, s.F, ctx.stream());
    std::vector<float> expected(static_cast<size_t>(s.N) * s.F);
    kernels::cpu::swiglu_forward(expected.data(), gu.data(), s.N, s.F);
    EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_out), expected, kBf16Rtol, kAtol));
  }
}

TEST(SwiGluCudaTest, BackwardMatchesCpuAndOverwrites) {
  LOOM_SKIP_WITHOUT_GPU();
  cuda::Context& ctx = gpu();
  for (const Size& s : kSizes) {
    SCOPED_TRACE(::testing::Message() << "N=" << s.N << " F=" << s.F);
    const size_t n2 = static_cast<size_t>(s.N) * 2 * s.F;
    const std::vector<float> gu = bf16_rounded(random_floats(n2, 2, -8.0f, 8.0f));
    const std::vector<float> dout = bf16_rounded(random_floats(static_cast<size_t>(s.N) * s.F, 3));
    Tensor d_gu = bf16_upload(gu, Shape{s.N, 2 * s.F});
    Tensor d_dout = bf16_upload(dout, Shape{s.N, s.F});
    // dgu prefilled with garbage: it must be overwritten, not accumulated into.
    Tensor d_dgu = bf16_upload(bf16_rounded(random_floats(n2, 4)), Shape{s.N, 2 * s.F});
    kernels::cuda::swiglu_backward(d_dgu.bf16_data(), d_gu.bf16_data(), d_dout.bf16_data(), s.N, s.F,
                                   ctx.stream());
    std::vector<float> expected(n2);
    kernels::cpu::swiglu_backward(expected.data(), gu.data(), dout.data(), s.N, s.F);
    EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_dgu), expected, kBf16Rtol, kBackwardAtol));
  }
}

TEST(SwiGluCudaTest, ExtremeInputsStayFinite) {
  LOOM_SKIP_WITHOUT_GPU();
  cuda::Context& ctx = gpu();
  const std::vector<float> gates =
      bf16_rounded({0.0f, -0.0f, 20.0f, -20.0f, 100.0f, -100.0f, 1e4f, -1e4f, 1e20f, -1e20f, 3e38f, -3e38f});
  const int F = static_cast<int>(gates.size());
  std::vector<float> gu(gates);
  gu.insert(gu.end(), static_cast<size_t>(F), 0.5f);
  const std::vector<float> ones(static_cast<size_t>(F), 1.0f);
  Tensor d_gu = bf16_upload(gu, Shape{1, 2 * F});
  Tensor d_ones = bf16_upload(ones, Shape{1, F});
  Tensor d_out = cuda::device_empty(ctx, Shape{1, F}, DType::kBF16);
  Tensor d_dgu = cuda::device_empty(ctx, Shape{1, 2 * F}, DType::kBF16);
  kernels::cuda::swiglu_forward(d_out.bf16_data(), d_gu.bf16_data(), 1, F, ctx.stream());
  kernels::cuda::swiglu_backward(d_dgu.bf16_data(), d_gu.bf16_data(), d_ones.bf16_data(), 1, F, ctx.stream());
  std::vector<float> expected_out(static_cast<size_t>(F)), expected_dgu(gu.size());
  kernels::cpu::swiglu_forward(expected_out.data(), gu.data(), 1, F);
  kernels::cpu::swiglu_backward(expected_dgu.data(), gu.data(), ones.data(), 1, F);
  EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_out), bf16_rounded(expected_out), 0.0, kAtol));
  EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_dgu), bf16_rounded(expected_dgu), 0.0, kAtol));
}

}  // namespace
}  // namespace loom
