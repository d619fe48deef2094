// The GPU rotary position embeddings against their CPU twin (kernels/cpu/rope.h), forward and
// backward: within one bf16 rounding, over multi-head, multi-query and grouped-query layouts, head
// sizes with (multiples of 16) and without the 16-byte path, a misaligned buffer, far positions
// (sincosf's slow path), decoding rows against the full forward, and v left bit for bit.
#include "kernels/cuda/rope.h"

#include <gtest/gtest.h>

#include <vector>

#include "cuda_test_util.h"
#include "kernels/cpu/rope.h"

namespace loom {
namespace {

using testing::all_close;
using testing::bf16_rounded;
using testing::bitwise_equal;
using testing::gpu;
using testing::random_floats;

// Both sides rotate the same bf16 inputs in f32; the GPU's sincosf is within 2 ulp of the CPU's
// correctly rounded cos and sin, and either may fuse a product into an FMA: the f32 results agree
// to ~4 * 2^-24 of max(|a|, |b|) <= 2 (atol 1e-6 where a c - b s cancels). The GPU rounds once to
// bf16: half an ulp (2^-9 relative), a whole one where the two f32 values straddle a rounding
// boundary: rtol 5e-3.
constexpr double kBf16Rtol = 5e-3;
constexpr double kAtol = 1e-6;

struct Layout {
  int B, T, NH, NKV, HS, first_position;
};
const Layout kLayouts[] = {{2, 5, 4, 4, 64, 0},     {3, 7, 6, 1, 128, 11}, {2, 9, 6, 2, 8, 1000},
                           {1, 3, 8, 2, 2, 100000}, {4, 1, 4, 2, 64, 77},  {2, 33, 32, 8, 128, 131000}};

size_t width(const Layout& l) { return static_cast<size_t>(l.NH + 2 * l.NKV) * l.HS; }
size_t numel(const Layout& l) { return static_cast<size_t>(l.B) * l.T * width(l); }

// The GPU's result of forward (or backward) on `x` (bf16 values) placed `offset` elements into its
// buffer (offset 1 breaks the 16-byte alignment).
std::vector<float> gpu_rope(const std::vector<float>& x, const std::vector<float>& inv_freq, const Layout& l,
                            bool backward, int offset = 0) {
  cuda::Context& ctx = gpu();
  std::vector<float> padded(static_cast<size_t>(offset), 0.0f);
  padded.insert(padded.end(), x.begin(), x.end());
  Tensor d_qkv = cuda::upload(ctx, padded, Shape{static_cast<int64_t>(padded.size())}, DType::kBF16);
  Tensor d_inv_freq = cuda::upload(ctx, inv_freq, Shape{l.HS / 2});
  bf16* qkv = d_qkv.bf16_data() + offset;
  if (backward) {
    kernels::cuda::rope_backward(qkv, d_inv_freq.f32(), l.B, l.T, l.NH, l.NKV, l.HS, l.first_position, ctx.stream());
  } else {
    kernels::cuda::rope_forward(qkv, d_inv_freq.f32(), l.B, l.T, l.NH, l.NKV, l.HS, l.first_position, ctx.stream());
  }
  const std::vector<float> all = cuda::download_floats(ctx, d_qkv);
  return std::vector<float>(all.begin() + offset, all.end());
}

std::vector<float> cpu_rope(std::vector<float> x, const std::vector<float>& inv_freq, const Layout& l, bool backward) {
  if (backward) {
    kernels::cpu::rope_backward(x.data(), inv_freq.data(), l.B, l.T, l.NH, l.NKV, l.HS, l.first_position);
  } else {
    kernels::cpu::rope_forward(x.data(), inv_freq.data(), l.B, l.T, l.NH, l.NKV, l.HS, l.first_position);
  }
  return x;
}

// v of every row, which neither direction may change.
std::vector<float> values_of(const std::vector<float>& qkv, const Layout& l) {
  std::vector<float> v;
  for (size_t n = 0; n < static_cast<size_t>(l.B) * l.T; ++n) {
    const auto at = qkv.begin() + static_cast<std::ptrdiff_t>(n * width(l) + static_cast<size_t>(l.NH + l.NKV) * l.HS);
    v.insert(v.end(), at, at + l.NKV * l.HS);
  }
  return v;
}

TEST(RopeCudaTest, ForwardAndBackwardMatchCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  const kernels::cpu::RopeScaling llama31{true, 8.0f, 1.0f, 4.0f, 8192};
  for (const Layout& l : kLayouts) {
    for (int offset : {0, 1}) {
      SCOPED_TRACE(::testing::Message() << "B=" << l.B << " T=" << l.T << " NH=" << l.NH << " NKV=" << l.NKV << " HS="
                                        << l.HS << " first_position=" << l.first_position << " offset=" << offset);
      const std::vector<float> inv_freq = kernels::cpu::rope_inverse_frequencies(l.HS, 500000.0f, llama31);
      const std::vector<float> x = bf16_rounded(random_floats(numel(l), 1, -2.0f, 2.0f));
      for (bool backward : {false, true}) {
        const std::vector<float> got = gpu_rope(x, inv_freq, l, backward, offset);
        EXPECT_TRUE(all_close(got, cpu_rope(x, inv_freq, l, backward), kBf16Rtol, kAtol)) << "backward " << backward;
        EXPECT_TRUE(bitwise_equal(values_of(got, l), values_of(x, l))) << "backward " << backward;
      }
    }
  }
}

TEST(RopeCudaTest, DecodingRowsMatchTheFullForward) {
  LOOM_SKIP_WITHOUT_GPU();
  // Decoding rotates one row per sequence at T = 1 and first_position = its position: bit for bit
  // the full forward's row (the same kernel arithmetic on the same inputs).
  const Layout l{2, 9, 8, 2, 64, 4};
  const std::vector<float> inv_freq = kernels::cpu::rope_inverse_frequencies(l.HS, 10000.0f);
  const std::vector<float> x = bf16_rounded(random_floats(numel(l), 2));
  const std::vector<float> full = gpu_rope(x, inv_freq, l, false);
  std::vector<float> stepped;
  for (int n = 0; n < l.B * l.T; ++n) {
    const Layout one{1, 1, l.NH, l.NKV, l.HS, l.first_position + n % l.T};
    const auto row = x.begin() + static_cast<std::ptrdiff_t>(static_cast<size_t>(n) * width(l));
    const std::vector<float> rotated =
        gpu_rope(std::vector<float>(row, row + static_cast<std::ptrdiff_t>(width(l))), inv_freq, one, false);
    stepped.insert(stepped.end(), rotated.begin(), rotated.end());
  }
  EXPECT_TRUE(bitwise_equal(stepped, full));
}

}  // namespace
}  // namespace loom
