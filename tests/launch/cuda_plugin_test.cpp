// The seam to the CUDA code (launch/cuda_plugin.h) inside a test program: with CUDA, the code is
// linked in and found without loading anything, and answers as the CUDA code itself does; without
// CUDA, a GPU run is refused with the reason. `loom` and its plugin are tested from outside by
// tests/launch/cuda_plugin_test.sh.
#include "launch/cuda_plugin.h"

#include <gtest/gtest.h>

#include <string>

#include "test_util.h"
#ifdef LOOM_HAS_CUDA
#include "core/backend/cuda/cuda_backend.h"
#endif

namespace loom {
namespace {

TEST(CudaPluginTest, TheCudaCodeIsTheOneLinkedIn) {
#ifdef LOOM_HAS_CUDA
  EXPECT_TRUE(cuda_built_in());
  EXPECT_EQ(cuda_build_line(), "CUDA: built in, linked into this program");
  OpShape shape;
  shape.B = 4;
  shape.T = 64;
  shape.C = 96;
  shape.N = shape.B * shape.T;
  for (int64_t heads : {3, 1}) {  // head sizes 32 (taken) and 96 (refused)
    shape.NH = heads;
    EXPECT_EQ(cuda_plugin().unsupported(Op::kAttention, shape), cuda_backend_unsupported(Op::kAttention, shape));
  }
  EXPECT_NE(cuda_plugin().unsupported(Op::kAttention, shape), "");
  EXPECT_EQ(&cuda_plugin(), &cuda_plugin()) << "found once";
#else
  EXPECT_FALSE(cuda_built_in());
  EXPECT_EQ(cuda_build_line(), "CUDA: not built in");
  EXPECT_NE(testing::user_error_of([] { cuda_plugin(); }).find("this loom was built without CUDA"), std::string::npos);
#endif
}

}  // namespace
}  // namespace loom
