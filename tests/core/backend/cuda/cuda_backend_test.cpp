// CudaBackend's answers that need no GPU: fp32 refused with a user error, and unsupported()'s
// sentences for the shapes kernels/cuda cannot run. Its ops are tested against the CPU by the
// backend-ops harness (tests/core/backend/backend_ops_test.cpp), where a GPU is present; the
// last test here runs the memory ops too, and skips without a GPU.
#include "core/backend/cuda/cuda_backend.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cuda_test_util.h"

namespace loom {
namespace {

using testing::user_error_of;

TEST(CudaBackendTest, RefusesFp32WithAUserError) {
  // The precision is checked before a GPU is touched, so this runs anywhere.
  const std::string message = user_error_of([] { CudaBackend backend(0, Precision::kF32); });
  EXPECT_NE(message.find("the CUDA backend trains in bf16"), std::string::npos) << message;
  EXPECT_NE(message.find("CPU backend for fp32"), std::string::npos) << message;
}

TEST(CudaBackendTest, AttentionHeadSizesOutsideTheKernelsAreRefusedWithAReason) {
  OpShape shape;
  shape.B = 4;
  shape.T = 64;
  shape.C = 96;
  shape.N = shape.B * shape.T;
  for (int64_t heads : {3, 1}) {  // head sizes 32 and 96
    shape.NH = heads;
    const std::string why = cuda_backend_unsupported(Op::kAttention, shape);
    if (heads == 3) {
      EXPECT_EQ(why, "");
    } else {
      EXPECT_NE(why.find("head sizes (C / NH) of 32, 64 or 128 only"), std::string::npos) << why;
      EXPECT_NE(why.find("got 96"), std::string::npos) << why;
    }
  }
  shape.NH = 5;  // does not divide 96
  EXPECT_NE(cuda_backend_unsupported(Op::kAttention, shape).find("to divide C"), std::string::npos);
  shape.NH = 3;
  shape.B = 70000;
  EXPECT_NE(cuda_backend_unsupported(Op::kAttention, shape).find("at most 65535"), std::string::npos);
}

TEST(CudaBackendTest, DecodingAttentionTakesAnyHeadSizeUpTo256) {
  OpShape shape;
  shape.B = 4;
  shape.T = 1024;  // the cache's positions: any
  shape.C = 768;
  for (int64_t heads : {16, 12, 3}) {  // head sizes 48 and 64 run; 256 is the largest
    shape.NH = heads;
    EXPECT_EQ(cuda_backend_unsupported(Op::kAttentionDecode, shape), "") << "NH " << heads;
  }
  shape.NH = 2;  // head size 384
  const std::string why = cuda_backend_unsupported(Op::kAttentionDecode, shape);
  EXPECT_NE(why.find("head sizes (C / NH) of at most 256 (8 channels in each of a warp's 32 lanes), got 384"), std::string::npos) << why;
  shape.NH = 5;  // does not divide 768
  EXPECT_NE(cuda_backend_unsupported(Op::kAttentionDecode, shape).find("to divide C"), std::string::npos);
  shape.NH = 12;
  shape.B = 70000;
  EXPECT_NE(cuda_backend_unsupported(Op::kAttentionDecode, shape).find("at most 65535"), std::string::npos);
}

TEST(CudaBackendTest, SizesBeyondThirtyTwoBitsAreRefused) {
  OpShape shape;
  shape.N = int64_t{1} << 31;
  shape.C = 64;
  const std::string why = cuda_backend_unsupported(Op::kMatmul, shape);
  EXPECT_NE(why.find("N = 2147483648"), std::string::npos) << why;
  shape.N = 1024;
  EXPECT_EQ(cuda_backend_unsupported(Op::kMatmul, shape), "");
  shape.OC = (int64_t{1} << 30) + 1;
  EXPECT_NE(cuda_backend_unsupported(Op::kVocabCrossEntropy, shape).find("2^30 vocabulary rows"), std::string::npos);
}

TEST(CudaBackendTest, MemoryOpsRoundTripAndConvert) {
  LOOM_SKIP_WITHOUT_GPU();
  CudaBackend backend(testing::gpu());
  const std::vector<float> values = testing::bf16_rounded(testing::random_floats(1001, 7));
  Tensor f = backend.zeros({1001}, DType::kF32);
  backend.from_host(f, values.data());
  Tensor b = backend.zeros({1001}, DType::kBF16);
  backend.copy(b, f);
  Tensor back = backend.zeros({1001}, DType::kF32);
  backend.copy(back, b);
  std::vector<float> got(values.size());
  backend.to_host(got.data(), back);
  EXPECT_EQ(got, values);  // bf16-representable values survive f32 -> bf16 -> f32 exactly
  backend.zero(back);
  backend.to_host(got.data(), back);
  EXPECT_EQ(got, std::vector<float>(values.size(), 0.0f));
}

}  // namespace
}  // namespace loom
