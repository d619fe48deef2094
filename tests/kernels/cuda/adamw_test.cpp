// GPU AdamW over a segmented arena against the CPU twin (cpu::adamw_update_segments), the
// deterministic sum of squares against a double reference, and the fp32 <-> bf16 casts against
// loom::float_to_bf16 / bf16_to_float bit for bit.
//
// Tolerances:
// - master, m, v: rtol 1e-5, atol 1e-6. Both devices run the same fp32 formula
//   (cpu::adamw_update_element) with correctly rounded sqrt and division; they can differ only
//   where one compiler fuses a multiply-add and the other does not: a few ulps (~1e-7
//   relative) per step, compounding over the steps; a wrong term would be off by far more.
// - bf16 params: bitwise equal to the kernel's own master rounded by loom::float_to_bf16.
// - sum of squares: the fp32 result of a double sum, rtol 2^-23 (one fp32 ulp; the double
//   accumulation error, ~n * 1e-16, is far below).
// - padding elements, skipped steps, casts: bitwise.
#include "kernels/cuda/adamw.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "core/base/cuda/check.h"
#include "cuda_test_util.h"

namespace loom::kernels::cuda {
namespace {

using loom::testing::all_close;
using loom::testing::gpu;
using loom::testing::random_floats;

constexpr double kStateRtol = 1e-5;
constexpr double kStateAtol = 1e-6;
constexpr double kSumRtol = 1.0 / (1 << 23);

// Bit-exact host <-> device copies (upload and download_floats convert through float).
template <typename T>
Tensor upload_bits(const std::vector<T>& values, DType dtype) {
  static_assert(sizeof(T) == 2 || sizeof(T) == 4);
  auto& ctx = gpu();
  const Shape shape{static_cast<int64_t>(values.size() * sizeof(T) / dtype_size(dtype))};
  Tensor t = loom::cuda::device_empty(ctx, shape, dtype);
  loom::cuda::copy(ctx, t,
                   Tensor::view(const_cast<T*>(values.data()), shape, dtype, Device::kCPU));
  LOOM_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));
  return t;
}

template <typename T>
std::vector<T> download_bits(const Tensor& t) {
  auto& ctx = gpu();
  std::vector<T> out(static_cast<size_t>(t.numel()));
  loom::cuda::copy(ctx, Tensor::view(out.data(), t.shape(), t.dtype(), Device::kCPU), t);
  LOOM_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));
  return out;
}

Tensor upload_segments(const std::vector<AdamWSegment>& segments) {
  static_assert(sizeof(AdamWSegment) % sizeof(int32_t) == 0);
  std::vector<int32_t> words(segments.size() * sizeof(AdamWSegment) / sizeof(int32_t));
  std::memcpy(words.data(), segments.data(), segments.size() * sizeof(AdamWSegment));
  return upload_bits(words, DType::kI32);
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

bool inside(const std::vector<AdamWSegment>& segments, int64_t i) {
  for (const AdamWSegment& s : segments) {
    if (i >= s.begin && i < s.end) return true;
  }
  return false;
}

// An arena's optimizer state on the host and on the device.
struct Arena {
  int64_t n;
  std::vector<float> master, m, v, grad;
  std::vector<bf16> params;
  Tensor d_master, d_m, d_v, d_grad, d_params;

  Arena(int64_t size, uint32_t seed) : n(size) {
    const auto count = static_cast<size_t>(size);
    master = random_floats(count, seed);
    m = random_floats(count, seed + 1, -0.1f, 0.1f);
    v = random_floats(count, seed + 2, 0.0f, 0.01f);
    grad = random_floats(count, seed + 3, -2.0f, 2.0f);
    params.assign(count, bf16{0x1234});  // a pattern the padding must keep
    d_master = upload_bits(master, DType::kF32);
    d_m = upload_bits(m, DType::kF32);
    d_v = upload_bits(v, DType::kF32);
    d_grad = upload_bits(grad, DType::kF32);
    d_params = upload_bits(params, DType::kBF16);
  }

  float norm() const {
    double sum = 0;
    for (float g : grad) sum += static_cast<double>(g) * g;
    return static_cast<float>(std::sqrt(sum));
  }
};

// `steps` updates on both devices, then the comparisons.
void check_update(int64_t n, const std::vector<AdamWSegment>& segments, float max_norm_factor,
                  int steps) {
  SCOPED_TRACE("n " + std::to_string(n) + " max_norm_factor " + std::to_string(max_norm_factor));
  auto& ctx = gpu();
  Arena a(n, 7);
  const auto master_before = a.master, m_before = a.m, v_before = a.v;
  const float norm = a.norm();
  Tensor d_norm = upload_bits(std::vector<float>{norm}, DType::kF32);
  Tensor d_segments = upload_segments(segments);
  AdamWHyper hyper;
  hyper.lr = 1e-2f;
  hyper.weight_decay = 0.1f;
  hyper.max_norm = max_norm_factor * norm;  // 0: clipping off; < norm: clipping active
  const int num_segments = static_cast<int>(segments.size());
  for (int step = 1; step <= steps; ++step) {
    hyper.step = step;
    cpu::adamw_update_segments(a.master.data(), a.params.data(), a.grad.data(), a.m.data(),
                               a.v.data(), n, segments.data(), num_segments, norm, hyper);
    adamw_update(a.d_master.f32(), a.d_params.bf16_data(), a.d_grad.f32(), a.d_m.f32(),
                 a.d_v.f32(), n, reinterpret_cast<const AdamWSegment*>(d_segments.raw()),
                 num_segments, d_norm.f32(), hyper, ctx.stream());
  }
  const auto master = download_bits<float>(a.d_master);
  const auto m = download_bits<float>(a.d_m);
  const auto v = download_bits<float>(a.d_v);
  const auto params = download_bits<bf16>(a.d_params);
  EXPECT_TRUE(all_close(master, a.master, kStateRtol, kStateAtol));
  EXPECT_TRUE(all_close(m, a.m, kStateRtol, kStateAtol));
  EXPECT_TRUE(all_close(v, a.v, kStateRtol, kStateAtol));
  for (int64_t i = 0; i < n; ++i) {
    if (inside(segments, i)) {
      ASSERT_EQ(params[i].bits, float_to_bf16(master[i]).bits) << "index " << i;
    } else {
      ASSERT_EQ(params[i].bits, 0x1234) << "padding index " << i;
      ASSERT_EQ(std::memcmp(&master[i], &master_before[i], 4), 0) << "padding index " << i;
      ASSERT_EQ(std::memcmp(&m[i], &m_before[i], 4), 0) << "padding index " << i;
      ASSERT_EQ(std::memcmp(&v[i], &v_before[i], 4), 0) << "padding index " << i;
    }
  }
}

// Decay, no decay, a gap, decay, a tail: 5016 is not a multiple of the 256-thread block.
const std::vector<AdamWSegment> kSmallArena = {{0, 1000, 1}, {1000, 1777, 0}, {1800, 5003, 1}};

TEST(AdamWCudaTest, MatchesCpuTwinWithoutClipping) {
  LOOM_SKIP_WITHOUT_GPU();
  check_update(5016, kSmallArena, 0.0f, 3);   // clipping off
  check_update(5016, kSmallArena, 10.0f, 3);  // max_norm far above the norm: factor 1
}

TEST(AdamWCudaTest, MatchesCpuTwinWithClipping) {
  LOOM_SKIP_WITHOUT_GPU();
  check_update(5016, kSmallArena, 0.25f, 3);
}

TEST(AdamWCudaTest, GridStridesOverALargeArena) {
  LOOM_SKIP_WITHOUT_GPU();
  // Over 1M elements: each thread of the capped grid handles several, across segments.
  const std::vector<AdamWSegment> segments = {
      {0, 1000003, 1}, {1000003, 1000771, 0}, {1000800, 2600000, 1}, {2600000, 3000001, 0}};
  check_update(3000017, segments, 0.5f, 2);
}

TEST(AdamWCudaTest, NonFiniteNormLeavesEverythingUnchanged) {
  LOOM_SKIP_WITHOUT_GPU();
  auto& ctx = gpu();
  for (float norm : {std::numeric_limits<float>::quiet_NaN(),
                     std::numeric_limits<float>::infinity()}) {
    SCOPED_TRACE("norm " + std::to_string(norm));
    Arena a(5016, 9);
    Tensor d_norm = upload_bits(std::vector<float>{norm}, DType::kF32);
    Tensor d_segments = upload_segments(kSmallArena);
    AdamWHyper hyper;
    hyper.lr = 1e-2f;
    hyper.weight_decay = 0.1f;
    hyper.max_norm = 1.0f;
    adamw_update(a.d_master.f32(), a.d_params.bf16_data(), a.d_grad.f32(), a.d_m.f32(),
                 a.d_v.f32(), a.n, reinterpret_cast<const AdamWSegment*>(d_segments.raw()),
                 static_cast<int>(kSmallArena.size()), d_norm.f32(), hyper, ctx.stream());
    EXPECT_TRUE(same_bits(download_bits<float>(a.d_master), a.master));
    EXPECT_TRUE(same_bits(download_bits<float>(a.d_m), a.m));
    EXPECT_TRUE(same_bits(download_bits<float>(a.d_v), a.v));
    for (const bf16 p : download_bits<bf16>(a.d_params)) ASSERT_EQ(p.bits, 0x1234);
  }
}

float sum_of_squares_on_gpu(const Tensor& x, int64_t n, Tensor& result, bool accumulate) {
  auto& ctx = gpu();
  Tensor scratch = loom::cuda::device_empty(
      ctx, Shape{static_cast<int64_t>(gradient_norm_scratch_floats())}, DType::kF32);
  sum_of_squares(result.f32(), x.f32(), n, accumulate, scratch.f32(), ctx.stream());
  return download_bits<float>(result)[0];
}

TEST(AdamWCudaTest, SumOfSquaresMatchesDoubleAndIsDeterministic) {
  LOOM_SKIP_WITHOUT_GPU();
  auto& ctx = gpu();
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{3000017}}) {
    SCOPED_TRACE("n " + std::to_string(n));
    const auto x = random_floats(static_cast<size_t>(n), 5, -3.0f, 3.0f);
    double expected = 0;
    for (float xi : x) expected += static_cast<double>(xi) * xi;
    Tensor d_x = upload_bits(x, DType::kF32);
    Tensor result = loom::cuda::device_zeros(ctx, Shape{1}, DType::kF32);
    const float first = sum_of_squares_on_gpu(d_x, n, result, false);
    const float second = sum_of_squares_on_gpu(d_x, n, result, false);
    EXPECT_NEAR(first, expected, kSumRtol * expected);
    EXPECT_EQ(std::memcmp(&first, &second, 4), 0) << first << " vs " << second;

    // accumulate: a norm over two buffers (x, then x again).
    const float both = sum_of_squares_on_gpu(d_x, n, result, true);
    const double expected_both = static_cast<double>(first) + expected;
    EXPECT_NEAR(both, expected_both, kSumRtol * expected_both);
    sum_of_squares_on_gpu(d_x, n, result, false);
    const float both_again = sum_of_squares_on_gpu(d_x, n, result, true);
    EXPECT_EQ(std::memcmp(&both, &both_again, 4), 0) << both << " vs " << both_again;

    finish_norm(result.f32(), ctx.stream());
    EXPECT_EQ(download_bits<float>(result)[0], std::sqrt(both_again));  // both correctly rounded
  }
  Tensor result = upload_bits(std::vector<float>{5.0f}, DType::kF32);
  Tensor empty = loom::cuda::device_empty(ctx, Shape{1}, DType::kF32);
  EXPECT_EQ(sum_of_squares_on_gpu(empty, 0, result, true), 5.0f);
  EXPECT_EQ(sum_of_squares_on_gpu(empty, 0, result, false), 0.0f);
}

float from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Random values, then rounding ties, NaNs (quiet, signalling, negative with payload), infinities,
// values that round past the largest bf16, denormals and -0.
std::vector<float> cast_inputs() {
  auto values = random_floats(4099, 3, -100.0f, 100.0f);
  const uint32_t special[] = {0x3f808000u, 0x3f818000u, 0x3f80ffffu, 0x7fc00000u, 0x7f800001u,
                              0xffc00001u, 0x7fa00000u, 0x7f800000u, 0xff800000u, 0x7f7fffffu,
                              0x7f7f8000u, 0xff7fc000u, 0x00000001u, 0x00018000u, 0x80000000u};
  for (size_t k = 0; k < std::size(special); ++k) values[7 * k + 1] = from_bits(special[k]);
  return values;
}

TEST(AdamWCudaTest, F32ToBf16RoundsLikeTheHost) {
  LOOM_SKIP_WITHOUT_GPU();
  auto& ctx = gpu();
  const auto values = cast_inputs();
  const auto n = static_cast<int64_t>(values.size());
  Tensor in = upload_bits(values, DType::kF32);
  // offset 0: the vector path; offset 1: both pointers misaligned, the scalar path.
  for (int64_t offset : {int64_t{0}, int64_t{1}}) {
    SCOPED_TRACE("offset " + std::to_string(offset));
    Tensor out = upload_bits(std::vector<bf16>(values.size(), bf16{0x5555}), DType::kBF16);
    f32_to_bf16(out.bf16_data() + offset, in.f32() + offset, n - offset, ctx.stream());
    const auto got = download_bits<bf16>(out);
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t expected = i < offset ? 0x5555 : float_to_bf16(values[i]).bits;
      ASSERT_EQ(got[i].bits, expected) << "index " << i << " value " << values[i];
    }
  }
}

TEST(AdamWCudaTest, Bf16ToF32IsExactForEveryPattern) {
  LOOM_SKIP_WITHOUT_GPU();
  auto& ctx = gpu();
  std::vector<bf16> patterns(65536 + 3);  // + 3: not a multiple of the vector width
  for (size_t i = 0; i < patterns.size(); ++i) patterns[i].bits = static_cast<uint16_t>(i);
  const auto n = static_cast<int64_t>(patterns.size());
  Tensor in = upload_bits(patterns, DType::kBF16);
  for (int64_t offset : {int64_t{0}, int64_t{1}}) {
    SCOPED_TRACE("offset " + std::to_string(offset));
    Tensor out = upload_bits(std::vector<float>(patterns.size(), 0.5f), DType::kF32);
    bf16_to_f32(out.f32() + offset, in.bf16_data() + offset, n - offset, ctx.stream());
    const auto got = download_bits<uint32_t>(out);
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t expected = i < offset ? 0x3f000000u : uint32_t{patterns[i].bits} << 16;
      ASSERT_EQ(got[i], expected) << "index " << i;
    }
  }
}

}  // namespace
}  // namespace loom::kernels::cuda
