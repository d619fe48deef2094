// Tests for the CUDA decoding attention against its CPU twin (attention_decode in
// kernels/cpu/attention.h), which runs in fp32 on the same bf16-rounded inputs: whole sequences
// decoded one position at a time into caches that start as NaN, the caches they leave, bitwise
// determinism, and the shapes it refuses; multi-head, grouped-query and multi-query heads.
//
// Tolerances. Both sides compute the scores, the softmax and the weighted sum of the values in
// fp32 from the same bf16 numbers, in different orders (the GPU's per-warp online softmax, its
// partial results combined at the end, against the CPU's max, then sum, then product): their fp32
// results differ by ~1e-6 of max |v| = 2, i.e. ~2e-6 absolute. The GPU then rounds out to bf16
// once, a relative error of at most u = 2^-9 of |out|. So rtol 2u (one rounding, margin 2) and
// atol 1e-5 (the fp32 difference, margin 5). The caches are copies on both sides: bitwise equal.
#include "kernels/cuda/attention_decode.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/base/check.h"
#include "cuda_test_util.h"
#include "kernels/cpu/attention.h"

namespace loom {
namespace {

using testing::all_close;
using testing::bf16_rounded;
using testing::gpu;
using testing::poisoned;
using testing::random_floats;

constexpr double kU = 1.0 / 512;  // bf16's unit roundoff

// T positions decoded into caches of max_T positions.
struct Case {
  int B, T, max_T, C, NH, NKV;
  int HS() const { return C / NH; }
  int KV() const { return NKV * HS(); }   // a cache row
  int W() const { return C + 2 * KV(); }  // a qkv row: [q: C | k: KV | v: KV]
};

std::string name(const Case& s) {
  return "B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) + " max_T=" + std::to_string(s.max_T) +
         " C=" + std::to_string(s.C) + " NH=" + std::to_string(s.NH) + " NKV=" + std::to_string(s.NKV) +
         " HS=" + std::to_string(s.HS());
}

// Head sizes from 8 (a quarter of a warp) to 256 (the limit), powers of two and not; fewer
// positions than a block's warps (pos 0..2) and many; a cache filled to its last row.
const Case kCases[] = {
    {1, 1, 1, 64, 1, 1},         // one position, a cache of one row
    {2, 9, 16, 40, 5, 5},        // HS 8: most lanes idle
    {3, 37, 40, 96, 2, 2},       // HS 48, three sequences
    {2, 130, 130, 256, 2, 2},    // HS 128, the cache's last row
    {2, 20, 25, 512, 2, 2},      // HS 256
    {1, 300, 1024, 768, 12, 12}, // GPT-2 small's heads
    {2, 37, 40, 256, 4, 2},      // grouped: two query heads per kv head
    {2, 33, 40, 384, 6, 3},      // grouped, odd kv head count
    {3, 20, 24, 256, 8, 1},      // multi-query, eight query heads on one kv head
    {1, 1, 1, 256, 4, 1},        // multi-query, one position
};

struct Decoded {
  std::vector<float> out;               // (B, T, C)
  std::vector<float> k_cache, v_cache;  // (B, max_T, C)
};

// The rows of position pos of qkv (B, T, W): (B, W).
std::vector<float> position_rows(const std::vector<float>& qkv, const Case& s, int pos) {
  std::vector<float> rows;
  for (int b = 0; b < s.B; ++b) {
    const float* row = qkv.data() + (static_cast<size_t>(b) * s.T + pos) * s.W();
    rows.insert(rows.end(), row, row + s.W());
  }
  return rows;
}

void place_step(std::vector<float>* out, const std::vector<float>& step, const Case& s, int pos) {
  for (int b = 0; b < s.B; ++b) {
    std::memcpy(out->data() + (static_cast<size_t>(b) * s.T + pos) * s.C,
                step.data() + static_cast<size_t>(b) * s.C, static_cast<size_t>(s.C) * sizeof(float));
  }
}

Decoded gpu_decode(const Case& s, const std::vector<float>& qkv) {
  cuda::Context& ctx = gpu();
  const size_t cache = static_cast<size_t>(s.B) * s.max_T * s.KV();
  const Tensor k_d = cuda::upload(ctx, poisoned(cache), Shape{s.B, s.max_T, s.KV()}, DType::kBF16);
  const Tensor v_d = cuda::upload(ctx, poisoned(cache), Shape{s.B, s.max_T, s.KV()}, DType::kBF16);
  Decoded d;
  d.out.resize(static_cast<size_t>(s.B) * s.T * s.C);
  for (int pos = 0; pos < s.T; ++pos) {
    const Tensor row_d = cuda::upload(ctx, position_rows(qkv, s, pos), Shape{s.B, s.W()}, DType::kBF16);
    const Tensor out_d = cuda::upload(ctx, poisoned(static_cast<size_t>(s.B) * s.C), Shape{s.B, s.C}, DType::kBF16);
    kernels::cuda::attention_decode(out_d.bf16_data(), k_d.bf16_data(), v_d.bf16_data(), row_d.bf16_data(), s.B, pos,
                                    s.max_T, s.C, s.NH, s.NKV, ctx.stream());
    place_step(&d.out, cuda::download_floats(ctx, out_d), s, pos);
  }
  d.k_cache = cuda::download_floats(ctx, k_d);
  d.v_cache = cuda::download_floats(ctx, v_d);
  return d;
}

Decoded cpu_decode(const Case& s, const std::vector<float>& qkv) {
  Decoded d;
  d.out.resize(static_cast<size_t>(s.B) * s.T * s.C);
  d.k_cache = poisoned(static_cast<size_t>(s.B) * s.max_T * s.KV());
  d.v_cache = poisoned(d.k_cache.size());
  std::vector<float> step(static_cast<size_t>(s.B) * s.C);
  for (int pos = 0; pos < s.T; ++pos) {
    const std::vector<float> rows = position_rows(qkv, s, pos);
    kernels::cpu::attention_decode(step.data(), d.k_cache.data(), d.v_cache.data(), rows.data(), s.B, pos, s.max_T,
                                   s.C, s.NH, s.NKV);
    place_step(&d.out, step, s, pos);
  }
  return d;
}

// Equal values, or NaN on both sides (cache rows nobody wrote).
::testing::AssertionResult same_cache(const std::vector<float>& got, const std::vector<float>& expected) {
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] == expected[i] || (std::isnan(got[i]) && std::isnan(expected[i]))) continue;
    return ::testing::AssertionFailure() << "index " << i << ": got " << got[i] << " expected " << expected[i];
  }
  return ::testing::AssertionSuccess();
}

TEST(AttentionDecodeCudaTest, MatchesCpuTwin) {
  LOOM_SKIP_WITHOUT_GPU();
  for (const Case& s : kCases) {
    SCOPED_TRACE(name(s));
    // Scores q.k / sqrt(HS) of uniform [-2, 2] entries spread by ~1.3: a softmax far from uniform.
    const auto qkv = bf16_rounded(random_floats(static_cast<size_t>(s.B) * s.T * s.W(), 71, -2.0f, 2.0f));
    const Decoded got = gpu_decode(s, qkv), want = cpu_decode(s, qkv);
    EXPECT_TRUE(all_close(got.out, want.out, 2 * kU, 1e-5));
    EXPECT_TRUE(same_cache(got.k_cache, want.k_cache));
    EXPECT_TRUE(same_cache(got.v_cache, want.v_cache));
  }
}

TEST(AttentionDecodeCudaTest, DeterministicBitwise) {
  LOOM_SKIP_WITHOUT_GPU();
  for (const Case& s : {Case{2, 130, 130, 256, 2, 2}, Case{3, 20, 24, 256, 8, 1}}) {
    SCOPED_TRACE(name(s));
    const auto qkv = bf16_rounded(random_floats(static_cast<size_t>(s.B) * s.T * s.W(), 81, -2.0f, 2.0f));
    const Decoded a = gpu_decode(s, qkv), b = gpu_decode(s, qkv);
    EXPECT_EQ(0, std::memcmp(a.out.data(), b.out.data(), a.out.size() * sizeof(float)));
  }
}

TEST(AttentionDecodeCudaTest, RejectsUnsupportedShapes) {
  LOOM_SKIP_WITHOUT_GPU();
  // Checked before any launch or memory access.
  auto decode = [](int B, int pos, int max_T, int C, int NH, int NKV) {
    kernels::cuda::attention_decode(nullptr, nullptr, nullptr, nullptr, B, pos, max_T, C, NH, NKV, nullptr);
  };
  EXPECT_THROW(decode(1, 0, 8, 528, 2, 2), Error);    // head size 264
  EXPECT_THROW(decode(1, 0, 8, 100, 3, 3), Error);    // 3 does not divide 100
  EXPECT_THROW(decode(1, 8, 8, 64, 1, 1), Error);     // position 8 of an 8-row cache
  EXPECT_THROW(decode(70000, 0, 8, 64, 1, 1), Error);  // B above the grid's 65535
  EXPECT_THROW(decode(0, 0, 8, 64, 1, 1), Error);
  EXPECT_THROW(decode(1, 0, 8, 256, 4, 3), Error);    // 3 kv heads do not divide 4 heads
  EXPECT_THROW(decode(1, 0, 8, 256, 4, 0), Error);    // no kv heads
}

}  // namespace
}  // namespace loom
