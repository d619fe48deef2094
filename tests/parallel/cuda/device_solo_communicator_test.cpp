// The one-rank communicator on device memory: its collectives are copies enqueued on the stream
// it was given, device to device and between host and device.
#include <cuda_runtime_api.h>

#include <vector>

#include "core/base/cuda/check.h"
#include "cuda_test_util.h"
#include "parallel/device_solo_communicator.h"

namespace loom::parallel {
namespace {

TEST(DeviceSoloCommunicatorCudaTest, CopiesDeviceMemoryInStreamOrder) {
  LOOM_SKIP_WITHOUT_GPU();
  cuda::Context& context = testing::gpu();
  DeviceSoloCommunicator solo(context.stream(), "tp");
  const size_t n = 1000;
  std::vector<float> host = testing::random_floats(n, 5);
  Tensor a = Tensor::empty({static_cast<int64_t>(n)}, DType::kF32, context.allocator());
  Tensor b = Tensor::empty({static_cast<int64_t>(n)}, DType::kF32, context.allocator());
  LOOM_CUDA_CHECK(cudaMemcpyAsync(a.raw(), host.data(), n * sizeof(float), cudaMemcpyHostToDevice, context.stream()));
  solo.all_gather(a.raw(), b.raw(), n, DType::kF32);                         // device -> device
  std::unique_ptr<Communicator> child = solo.split(0, 0, "dp");               // inherits the stream
  child->all_reduce_async(b.raw(), a.raw(), n, DType::kF32, ReduceOp::kSum)->wait();
  std::vector<float> back(n, 0.0f);
  solo.reduce_scatter(a.raw(), back.data(), n, DType::kF32, ReduceOp::kSum);  // device -> host
  context.synchronize();
  EXPECT_EQ(back, host);
}

}  // namespace
}  // namespace loom::parallel
