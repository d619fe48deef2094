// Tests for the CUDA flash attention against the CPU twin (kernels/cpu/attention.h), which runs in
// fp32 on the same bf16-rounded inputs: forward output and log-sum-exp, the backward gradient,
// bitwise determinism, and causality (rows never depend on later positions), for multi-head,
// grouped-query (1 < NKV < NH) and multi-query (NKV = 1) heads; and with documents packed into
// the sequences (doc_starts), against the CPU twin's document masking.
//
// Tolerances. The GPU rounds each probability (forward, backward) and each dS (backward) to bf16
// before the tensor-core product, and rounds out and dqkv to bf16: relative 2^-9 ~ 0.2% per
// rounding, random in sign, so the relative L2 error of out and dqkv should be ~3e-3; it must be
// below 1e-2. Elementwise, all_close allows rtol 5e-2 plus an atol of 1e-2 times the largest
// reference magnitude (of that part of dqkv): an element that is a sum with cancellation carries
// the absolute error of its terms, not of its value. The log-sum-exp never goes through bf16
// (fp32 scores of exact bf16 products, fp32 max and sum), so it must agree to 1e-4 (|lse| < 10).
// The backward is compared on identical inputs: the CPU twin gets the GPU's bf16 out and its lse,
// so D = dot(dout, out) is the same on both sides.
#include "kernels/cuda/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <span>
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
using testing::relative_l2;

struct Case {
  int B, T, C, NH, NKV;
  int HS() const { return C / NH; }
  int W() const { return C + 2 * NKV * HS(); }  // a qkv row: [q: C | k: NKV*HS | v: NKV*HS]
};

std::string name(const Case& s) {
  return "B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) + " C=" + std::to_string(s.C) +
         " NH=" + std::to_string(s.NH) + " NKV=" + std::to_string(s.NKV) + " HS=" +
         std::to_string(s.HS());
}

size_t qkv_size(const Case& s) { return static_cast<size_t>(s.B) * s.T * s.W(); }
size_t out_size(const Case& s) { return static_cast<size_t>(s.B) * s.T * s.C; }
size_t lse_size(const Case& s) { return static_cast<size_t>(s.B) * s.NH * s.T; }

// Tiles are 64 positions for HS 32 and 64, 32 for HS 128: T = 1, 17, 64, 65, 200, 1024 cover
// one position, a partial tile, whole tiles, one past a tile, several with a partial last one.
const Case kCases[] = {
    {1, 1, 64, 1, 1},      // a single position
    {2, 17, 128, 2, 2},    // one partial tile, two batches
    {1, 64, 64, 1, 1},     // exactly one tile
    {2, 65, 192, 3, 3},    // one position past a tile, odd head count
    {2, 200, 128, 2, 2},   // several tiles, the last partial
    {1, 1024, 128, 2, 2},  // GPT-2's context length
    {2, 77, 64, 2, 2},     // HS 32
    {2, 77, 256, 2, 2},    // HS 128 (32-position tiles: three of them, the last partial)
    {1, 1, 128, 1, 1},     // HS 128, a single position
    {2, 200, 256, 4, 2},   // grouped: two query heads per kv head
    {2, 65, 384, 6, 3},    // grouped, odd kv head count
    {1, 130, 256, 8, 1},   // multi-query, HS 32, eight query heads on one kv head
    {2, 77, 512, 4, 1},    // multi-query, HS 128
    {1, 1, 256, 4, 2},     // grouped, a single position
};

// Inputs: scores q.k / sqrt(HS) of uniform [-2, 2] entries have a standard deviation of ~1.3, so
// the softmax is far from uniform and the running max changes from tile to tile.
std::vector<float> make_qkv(const Case& s, uint32_t seed) {
  return bf16_rounded(random_floats(qkv_size(s), seed, -2.0f, 2.0f));
}

// doc_starts (B, T) on the device; absent for null.
Tensor upload_doc_starts(const std::vector<int32_t>* doc_starts) {
  if (doc_starts == nullptr) return Tensor();
  return cuda::upload(gpu(), std::span<const int32_t>(*doc_starts),
                      Shape{static_cast<int64_t>(doc_starts->size())});
}

const int32_t* i32_or_null(const Tensor& t) { return t.raw() ? t.i32() : nullptr; }

void gpu_forward(const Case& s, const std::vector<float>& qkv, std::vector<float>* out,
                 std::vector<float>* lse, const std::vector<int32_t>* doc_starts = nullptr) {
  cuda::Context& ctx = gpu();
  const Tensor starts_d = upload_doc_starts(doc_starts);
  const Tensor qkv_d = cuda::upload(ctx, qkv, Shape{s.B, s.T, s.W()}, DType::kBF16);
  // Poisoned (NaN) outputs: an element the kernel does not write fails the comparison.
  const Tensor out_d = cuda::upload(ctx, poisoned(out_size(s)), Shape{s.B, s.T, s.C}, DType::kBF16);
  const Tensor lse_d = cuda::upload(ctx, poisoned(lse_size(s)), Shape{s.B, s.NH, s.T});
  kernels::cuda::attention_forward(out_d.bf16_data(), lse_d.f32(), qkv_d.bf16_data(), s.B, s.T,
                                   s.C, s.NH, s.NKV, ctx.stream(), i32_or_null(starts_d));
  *out = cuda::download_floats(ctx, out_d);
  *lse = cuda::download_floats(ctx, lse_d);
}

std::vector<float> gpu_backward(const Case& s, const std::vector<float>& dout,
                                const std::vector<float>& qkv, const std::vector<float>& out,
                                const std::vector<float>& lse,
                                const std::vector<int32_t>* doc_starts = nullptr) {
  cuda::Context& ctx = gpu();
  const Tensor starts_d = upload_doc_starts(doc_starts);
  const Tensor qkv_d = cuda::upload(ctx, qkv, Shape{s.B, s.T, s.W()}, DType::kBF16);
  const Tensor dout_d = cuda::upload(ctx, dout, Shape{s.B, s.T, s.C}, DType::kBF16);
  const Tensor out_d = cuda::upload(ctx, out, Shape{s.B, s.T, s.C}, DType::kBF16);
  const Tensor lse_d = cuda::upload(ctx, lse, Shape{s.B, s.NH, s.T});
  const Tensor dqkv_d =
      cuda::upload(ctx, poisoned(qkv_size(s)), Shape{s.B, s.T, s.W()}, DType::kBF16);
  const auto n_scratch =
      static_cast<int64_t>(kernels::cuda::attention_backward_scratch_floats(s.B, s.T, s.NH));
  const Tensor scratch = cuda::device_empty(ctx, Shape{n_scratch}, DType::kF32);
  kernels::cuda::attention_backward(dqkv_d.bf16_data(), dout_d.bf16_data(), qkv_d.bf16_data(),
                                    out_d.bf16_data(), lse_d.f32(), s.B, s.T, s.C, s.NH,
                                    s.NKV, scratch.f32(), ctx.stream(), i32_or_null(starts_d));
  return cuda::download_floats(ctx, dqkv_d);
}

double max_abs(const std::vector<float>& x) {
  double m = 0;
  for (float v : x) m = std::max(m, static_cast<double>(std::fabs(v)));
  return m;
}

// Part 0, 1 or 2 (q, k or v) of every row of a (B, T, W) buffer.
std::vector<float> part(const std::vector<float>& x, const Case& s, int which) {
  const size_t kv_width = static_cast<size_t>(s.NKV) * s.HS();
  const size_t first = which == 0 ? 0 : s.C + (which - 1) * kv_width;
  const size_t width = which == 0 ? s.C : kv_width;
  std::vector<float> result;
  result.reserve(static_cast<size_t>(s.B) * s.T * width);
  for (size_t row = 0; row < static_cast<size_t>(s.B) * s.T; ++row) {
    const float* begin = x.data() + row * s.W() + first;
    result.insert(result.end(), begin, begin + width);
  }
  return result;
}

TEST(AttentionCudaTest, ForwardMatchesCpuTwin) {
  LOOM_SKIP_WITHOUT_GPU();
  for (const Case& s : kCases) {
    SCOPED_TRACE(name(s));
    const auto qkv = make_qkv(s, 11);
    std::vector<float> out, lse;
    gpu_forward(s, qkv, &out, &lse);
    std::vector<float> out_ref(out_size(s)), lse_ref(lse_size(s));
    kernels::cpu::attention_forward(out_ref.data(), lse_ref.data(), qkv.data(), s.B, s.T, s.C,
                                    s.NH, s.NKV);
    EXPECT_LT(relative_l2(out, out_ref), 1e-2);
    EXPECT_TRUE(all_close(out, out_ref, 5e-2, 1e-2 * max_abs(out_ref)));
    EXPECT_TRUE(all_close(lse, lse_ref, 1e-4, 1e-4));
  }
}

TEST(AttentionCudaTest, BackwardMatchesCpuTwin) {
  LOOM_SKIP_WITHOUT_GPU();
  for (const Case& s : kCases) {
    SCOPED_TRACE(name(s));
    const auto qkv = make_qkv(s, 21);
    const auto dout = bf16_rounded(random_floats(out_size(s), 22));
    std::vector<float> out, lse;
    gpu_forward(s, qkv, &out, &lse);
    const auto dqkv = gpu_backward(s, dout, qkv, out, lse);
    std::vector<float> dqkv_ref(qkv_size(s), 0.0f);  // the CPU twin accumulates
    kernels::cpu::attention_backward(dqkv_ref.data(), dout.data(), qkv.data(), out.data(),
                                     lse.data(), s.B, s.T, s.C, s.NH, s.NKV);
    EXPECT_LT(relative_l2(dqkv, dqkv_ref), 1e-2);
    for (int which = 0; which < 3; ++which) {
      SCOPED_TRACE(std::string("d") + "qkv"[which]);
      const auto got = part(dqkv, s, which);
      const auto expected = part(dqkv_ref, s, which);
      // The 1e-5 floor covers T = 1, where dq and dk are exactly zero in exact arithmetic and
      // both sides hold only fp32 rounding noise of dP - D (~1e-7).
      EXPECT_TRUE(all_close(got, expected, 5e-2, 1e-2 * max_abs(expected) + 1e-5));
    }
  }
}

// Documents of 1 to 90 positions packed into every sequence: several per tile, and documents that
// span tiles, so that the kernels skip whole key tiles and meet rows with no key of their
// document in a visited tile. The same bounds as the unpacked comparisons above.
TEST(AttentionCudaTest, PackedDocumentsMatchCpuTwin) {
  LOOM_SKIP_WITHOUT_GPU();
  for (const Case& s : {Case{2, 200, 128, 2, 2}, Case{2, 200, 256, 4, 2}, Case{1, 130, 256, 8, 1},
                        Case{2, 77, 256, 2, 2}}) {
    SCOPED_TRACE(name(s));
    const std::vector<int32_t> lengths =
        testing::random_ints(static_cast<size_t>(s.B) * s.T, 61, 1, 91);
    std::vector<int32_t> doc_starts(static_cast<size_t>(s.B) * s.T);
    size_t next = 0;
    for (int b = 0; b < s.B; ++b) {
      for (int start = 0; start < s.T;) {
        const int end = std::min(s.T, start + lengths[next++]);
        for (int t = start; t < end; ++t) doc_starts[static_cast<size_t>(b) * s.T + t] = start;
        start = end;
      }
    }
    const auto qkv = make_qkv(s, 62);
    const auto dout = bf16_rounded(random_floats(out_size(s), 63));
    std::vector<float> out, lse;
    gpu_forward(s, qkv, &out, &lse, &doc_starts);
    std::vector<float> out_ref(out_size(s)), lse_ref(lse_size(s));
    kernels::cpu::attention_forward(out_ref.data(), lse_ref.data(), qkv.data(), s.B, s.T, s.C,
                                    s.NH, s.NKV, doc_starts.data());
    EXPECT_LT(relative_l2(out, out_ref), 1e-2);
    EXPECT_TRUE(all_close(out, out_ref, 5e-2, 1e-2 * max_abs(out_ref)));
    EXPECT_TRUE(all_close(lse, lse_ref, 1e-4, 1e-4));
    const auto dqkv = gpu_backward(s, dout, qkv, out, lse, &doc_starts);
    std::vector<float> dqkv_ref(qkv_size(s), 0.0f);
    kernels::cpu::attention_backward(dqkv_ref.data(), dout.data(), qkv.data(), out.data(),
                                     lse.data(), s.B, s.T, s.C, s.NH, s.NKV, doc_starts.data());
    EXPECT_LT(relative_l2(dqkv, dqkv_ref), 1e-2);
    for (int which = 0; which < 3; ++which) {
      SCOPED_TRACE(std::string("d") + "qkv"[which]);
      const auto expected = part(dqkv_ref, s, which);
      EXPECT_TRUE(all_close(part(dqkv, s, which), expected, 5e-2, 1e-2 * max_abs(expected) + 1e-5));
    }
  }
}

TEST(AttentionCudaTest, DeterministicBitwise) {
  LOOM_SKIP_WITHOUT_GPU();
  for (const Case& s : {Case{2, 200, 128, 2, 2}, Case{2, 200, 256, 4, 2}, Case{1, 130, 256, 8, 1}}) {
    SCOPED_TRACE(name(s));
    const auto qkv = make_qkv(s, 41);
    const auto dout = bf16_rounded(random_floats(out_size(s), 42));
    std::vector<float> out1, lse1, out2, lse2;
    gpu_forward(s, qkv, &out1, &lse1);
    gpu_forward(s, qkv, &out2, &lse2);
    const auto dqkv1 = gpu_backward(s, dout, qkv, out1, lse1);
    const auto dqkv2 = gpu_backward(s, dout, qkv, out1, lse1);
    EXPECT_EQ(0, std::memcmp(out1.data(), out2.data(), out1.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(lse1.data(), lse2.data(), lse1.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(dqkv1.data(), dqkv2.data(), dqkv1.size() * sizeof(float)));
  }
}

// Replacing q, k and v of every position after t (with large values, so that any leak would be
// visible) must leave out and lse of positions 0..t bitwise unchanged: their masked probabilities
// are exactly 0 and meet the changed values only as 0 * finite = 0.
TEST(AttentionCudaTest, ForwardNeverReadsLaterPositions) {
  LOOM_SKIP_WITHOUT_GPU();
  for (const Case& s : {Case{2, 100, 128, 2, 2}, Case{1, 70, 256, 2, 2}, Case{2, 100, 256, 4, 1}}) {
    const auto qkv = make_qkv(s, 51);
    std::vector<float> out, lse;
    gpu_forward(s, qkv, &out, &lse);
    const auto noise = bf16_rounded(random_floats(qkv_size(s), 52, -50.0f, 50.0f));
    for (int t : {0, 31, 37, 63, 64}) {
      SCOPED_TRACE(name(s) + " t=" + std::to_string(t));
      auto changed = qkv;
      for (int b = 0; b < s.B; ++b) {
        const size_t first = (static_cast<size_t>(b) * s.T + t + 1) * s.W();
        const size_t last = (static_cast<size_t>(b) + 1) * s.T * s.W();
        std::copy(noise.begin() + static_cast<std::ptrdiff_t>(first),
                  noise.begin() + static_cast<std::ptrdiff_t>(last),
                  changed.begin() + static_cast<std::ptrdiff_t>(first));
      }
      std::vector<float> out2, lse2;
      gpu_forward(s, changed, &out2, &lse2);
      for (int b = 0; b < s.B; ++b) {
        const size_t row0 = static_cast<size_t>(b) * s.T * s.C;
        EXPECT_EQ(0, std::memcmp(out.data() + row0, out2.data() + row0,
                                 static_cast<size_t>(t + 1) * s.C * sizeof(float)))
            << "out of batch " << b;
        for (int h = 0; h < s.NH; ++h) {
          const size_t lse0 = (static_cast<size_t>(b) * s.NH + h) * s.T;
          EXPECT_EQ(0, std::memcmp(lse.data() + lse0, lse2.data() + lse0,
                                   static_cast<size_t>(t + 1) * sizeof(float)))
              << "lse of batch " << b << " head " << h;
        }
      }
      // Sanity: the change is visible after t (in the last position's output).
      const size_t last_row = (static_cast<size_t>(s.B) * s.T - 1) * s.C;
      EXPECT_NE(0, std::memcmp(out.data() + last_row, out2.data() + last_row,
                               static_cast<size_t>(s.C) * sizeof(float)));
    }
  }
}

TEST(AttentionCudaTest, RejectsUnsupportedShapes) {
  LOOM_SKIP_WITHOUT_GPU();
  // Checked before any launch or memory access.
  EXPECT_THROW(kernels::cuda::attention_forward(nullptr, nullptr, nullptr, 1, 8, 96, 2, 2, nullptr),
               Error);  // head size 48
  EXPECT_THROW(kernels::cuda::attention_forward(nullptr, nullptr, nullptr, 1, 8, 100, 3, 3, nullptr),
               Error);  // 3 does not divide 100
  EXPECT_THROW(kernels::cuda::attention_forward(nullptr, nullptr, nullptr, 0, 8, 64, 1, 1, nullptr),
               Error);
  EXPECT_THROW(kernels::cuda::attention_forward(nullptr, nullptr, nullptr, 1, 8, 256, 4, 3, nullptr),
               Error);  // 3 kv heads do not divide 4 heads
  EXPECT_THROW(kernels::cuda::attention_backward(nullptr, nullptr, nullptr, nullptr, nullptr, 1, 8,
                                                 64, 4, 4, nullptr, nullptr),
               Error);  // head size 16
  EXPECT_THROW(kernels::cuda::attention_backward(nullptr, nullptr, nullptr, nullptr, nullptr, 1, 8,
                                                 256, 4, 0, nullptr, nullptr),
               Error);  // no kv heads
}

}  // namespace
}  // namespace loom
