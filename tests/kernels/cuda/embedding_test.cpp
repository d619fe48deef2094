// The GPU embedding against its CPU twin (kernels/cpu/embedding.h): forward bit for bit, backward
// within fp32 summation order, for the whole GPT-2 vocabulary, a vocabulary shard, a row block
// starting mid-sequence, widths that are and are not multiples of 8, and a single token repeated
// over every row; the backward's determinism (two runs, the same bits); and the position term
// alone, forward and backward.
#include "kernels/cuda/embedding.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/cpu/embedding.h"

namespace loom {
namespace {

using testing::all_close;
using testing::bf16_rounded;
using testing::gpu;
using testing::random_floats;
using testing::random_ints;

// Forward: both sides add the same two bf16 values in fp32 and round once (RNE): exact.
// Backward: the CPU adds each row into the running gradient, the GPU sums a token's rows first and
// adds the sum; fp32 sums of up to n = 2000 terms in [-1, 1] (|sum| ~ 0.6 sqrt(n) ~ 26) differ by
// ~sqrt(n) * 2^-24 * |sum| ~ 1e-4: rtol 1e-5, atol 5e-4.
constexpr double kBackwardRtol = 1e-5;
constexpr double kBackwardAtol = 5e-4;

struct Case {
  int N, T, C, V;                 // rows, sequence length, width, whole vocabulary
  int vocab_start, vocab_count;   // this rank's shard
  int first_row;
  bool one_token;                 // every row the same token: one run of N rows
};
const Case kCases[] = {
    {1, 1, 3, 50257, 0, 50257, 0, false},
    {7, 5, 100, 50257, 0, 50257, 0, false},
    {4096 + 13, 1024, 768, 50257, 0, 50257, 0, false},
    {300, 64, 64, 300, 100, 150, 37, false},   // shard; rows 37.. of the batch
    {1000, 7, 33, 3, 0, 3, 5, false},           // three tokens, long runs
    {2000, 128, 96, 50257, 0, 50257, 0, true},  // one run of 2000 rows
};

TEST(EmbeddingCudaTest, ForwardMatchesCpuExactly) {
  LOOM_SKIP_WITHOUT_GPU();
  cuda::Context& ctx = gpu();
  for (const Case& k : kCases) {
    for (bool with_wpe : {true, false}) {
      SCOPED_TRACE(::testing::Message() << "N=" << k.N << " T=" << k.T << " C=" << k.C
                                        << " shard=" << k.vocab_start << "+" << k.vocab_count
                                        << " wpe=" << with_wpe);
      std::vector<int32_t> tokens = random_ints(static_cast<size_t>(k.N), 1, 0, k.V);
      if (k.one_token) tokens.assign(tokens.size(), 4242);
      const std::vector<float> wte =
          bf16_rounded(random_floats(static_cast<size_t>(k.vocab_count) * k.C, 2));
      const std::vector<float> wpe = bf16_rounded(random_floats(static_cast<size_t>(k.T) * k.C, 3));
      Tensor d_tokens = cuda::upload(ctx, std::span<const int32_t>(tokens), Shape{k.N});
      Tensor d_wte = cuda::upload(ctx, wte, Shape{k.vocab_count, k.C}, DType::kBF16);
      Tensor d_wpe = cuda::upload(ctx, wpe, Shape{k.T, k.C}, DType::kBF16);
      Tensor d_out = cuda::device_empty(ctx, Shape{k.N, k.C}, DType::kBF16);
      kernels::cuda::embedding_forward(d_out.bf16_data(), d_tokens.i32(), d_wte.bf16_data(),
                                       with_wpe ? d_wpe.bf16_data() : nullptr, k.N, k.T, k.C,
                                       k.vocab_start, k.vocab_count, k.first_row, ctx.stream());
      std::vector<float> expected(static_cast<size_t>(k.N) * k.C);
      kernels::cpu::token_embedding_forward(expected.data(), tokens.data(), wte.data(), k.N, k.C,
                                            k.vocab_start, k.vocab_count);
      if (with_wpe) {
        kernels::cpu::position_embedding_forward(expected.data(), wpe.data(), k.N, k.T, k.C,
                                                 k.first_row);
      }
      EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_out), bf16_rounded(expected), 0.0, 0.0));
    }
  }
}

TEST(EmbeddingCudaTest, BackwardMatchesCpuAccumulatesAndIsDeterministic) {
  LOOM_SKIP_WITHOUT_GPU();
  cuda::Context& ctx = gpu();
  for (const Case& k : kCases) {
    SCOPED_TRACE(::testing::Message() << "N=" << k.N << " T=" << k.T << " C=" << k.C
                                      << " shard=" << k.vocab_start << "+" << k.vocab_count);
    std::vector<int32_t> tokens = random_ints(static_cast<size_t>(k.N), 4, 0, k.V);
    if (k.one_token) tokens.assign(tokens.size(), 4242);
    const std::vector<float> dout = bf16_rounded(random_floats(static_cast<size_t>(k.N) * k.C, 5));
    const std::vector<float> dwte0 = random_floats(static_cast<size_t>(k.vocab_count) * k.C, 6);
    const std::vector<float> dwpe0 = random_floats(static_cast<size_t>(k.T) * k.C, 7);
    Tensor d_tokens = cuda::upload(ctx, std::span<const int32_t>(tokens), Shape{k.N});
    Tensor d_dout = cuda::upload(ctx, dout, Shape{k.N, k.C}, DType::kBF16);
    const size_t scratch_bytes = kernels::cuda::embedding_backward_scratch_bytes(k.N);
    Tensor d_scratch = cuda::device_empty(
        ctx, Shape{static_cast<int64_t>((scratch_bytes + 3) / 4)}, DType::kF32);

    std::vector<float> dwte[2], dwpe[2];
    for (int run = 0; run < 2; ++run) {
      Tensor d_dwte = cuda::upload(ctx, dwte0, Shape{k.vocab_count, k.C});
      Tensor d_dwpe = cuda::upload(ctx, dwpe0, Shape{k.T, k.C});
      kernels::cuda::embedding_backward(d_dwte.f32(), d_dwpe.f32(), d_dout.bf16_data(),
                                        d_tokens.i32(), k.N, k.T, k.C, k.vocab_start,
                                        k.vocab_count, k.first_row, d_scratch.raw(), ctx.stream());
      dwte[run] = cuda::download_floats(ctx, d_dwte);
      dwpe[run] = cuda::download_floats(ctx, d_dwpe);
    }
    std::vector<float> expected_dwte = dwte0, expected_dwpe = dwpe0;
    kernels::cpu::token_embedding_backward(expected_dwte.data(), dout.data(), tokens.data(), k.N,
                                           k.C, k.vocab_start, k.vocab_count);
    kernels::cpu::position_embedding_backward(expected_dwpe.data(), dout.data(), k.N, k.T, k.C,
                                              k.first_row);
    EXPECT_TRUE(all_close(dwte[0], expected_dwte, kBackwardRtol, kBackwardAtol));
    EXPECT_TRUE(all_close(dwpe[0], expected_dwpe, kBackwardRtol, kBackwardAtol));
    EXPECT_EQ(0, std::memcmp(dwte[0].data(), dwte[1].data(), sizeof(float) * dwte[0].size()));
    EXPECT_EQ(0, std::memcmp(dwpe[0].data(), dwpe[1].data(), sizeof(float) * dwpe[0].size()));
  }
}

TEST(EmbeddingCudaTest, BackwardWithoutPositionTable) {
  LOOM_SKIP_WITHOUT_GPU();
  cuda::Context& ctx = gpu();
  const int N = 513, T = 64, C = 40, V = 97;
  const std::vector<int32_t> tokens = random_ints(static_cast<size_t>(N), 8, 0, V);
  const std::vector<float> dout = bf16_rounded(random_floats(static_cast<size_t>(N) * C, 9));
  Tensor d_tokens = cuda::upload(ctx, std::span<const int32_t>(tokens), Shape{N});
  Tensor d_dout = cuda::upload(ctx, dout, Shape{N, C}, DType::kBF16);
  Tensor d_dwte = cuda::device_zeros(ctx, Shape{V, C}, DType::kF32);
  const size_t scratch_bytes = kernels::cuda::embedding_backward_scratch_bytes(N);
  Tensor d_scratch =
      cuda::device_empty(ctx, Shape{static_cast<int64_t>((scratch_bytes + 3) / 4)}, DType::kF32);
  kernels::cuda::embedding_backward(d_dwte.f32(), nullptr, d_dout.bf16_data(), d_tokens.i32(), N,
                                    T, C, 0, V, 0, d_scratch.raw(), ctx.stream());
  std::vector<float> expected(static_cast<size_t>(V) * C, 0.0f);
  kernels::cpu::token_embedding_backward(expected.data(), dout.data(), tokens.data(), N, C, 0, V);
  EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_dwte), expected, kBackwardRtol, kBackwardAtol));
}

// The position term alone (a stage that embeds tokens and positions in two steps): the forward
// adds to what out holds, exactly as the twin's fp32 sum rounded once; the backward accumulates.
TEST(EmbeddingCudaTest, PositionTermAloneMatchesCpu) {
  LOOM_SKIP_WITHOUT_GPU();
  cuda::Context& ctx = gpu();
  for (const Case& k : kCases) {
    SCOPED_TRACE(::testing::Message() << "N=" << k.N << " T=" << k.T << " C=" << k.C
                                      << " first_row=" << k.first_row);
    const size_t n = static_cast<size_t>(k.N) * k.C;
    const std::vector<float> out0 = bf16_rounded(random_floats(n, 10));
    const std::vector<float> wpe = bf16_rounded(random_floats(static_cast<size_t>(k.T) * k.C, 11));
    const std::vector<float> dout = bf16_rounded(random_floats(n, 12));
    const std::vector<float> dwpe0 = random_floats(static_cast<size_t>(k.T) * k.C, 13);
    Tensor d_out = cuda::upload(ctx, out0, Shape{k.N, k.C}, DType::kBF16);
    Tensor d_wpe = cuda::upload(ctx, wpe, Shape{k.T, k.C}, DType::kBF16);
    kernels::cuda::position_embedding_forward(d_out.bf16_data(), d_wpe.bf16_data(), k.N, k.T, k.C,
                                              k.first_row, ctx.stream());
    std::vector<float> expected = out0;
    kernels::cpu::position_embedding_forward(expected.data(), wpe.data(), k.N, k.T, k.C, k.first_row);
    EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_out), bf16_rounded(expected), 0.0, 0.0));

    Tensor d_dout = cuda::upload(ctx, dout, Shape{k.N, k.C}, DType::kBF16);
    Tensor d_dwpe = cuda::upload(ctx, dwpe0, Shape{k.T, k.C});
    kernels::cuda::position_embedding_backward(d_dwpe.f32(), d_dout.bf16_data(), k.N, k.T, k.C,
                                               k.first_row, ctx.stream());
    std::vector<float> expected_dwpe = dwpe0;
    kernels::cpu::position_embedding_backward(expected_dwpe.data(), dout.data(), k.N, k.T, k.C,
                                              k.first_row);
    EXPECT_TRUE(all_close(cuda::download_floats(ctx, d_dwpe), expected_dwpe, kBackwardRtol,
                          kBackwardAtol));
  }
}

}  // namespace
}  // namespace loom
