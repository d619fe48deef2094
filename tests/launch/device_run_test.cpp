// Which runs go to a GPU (DeviceRun::create), as far as it is decided without one.
#include "launch/device_run.h"

#include <string>

#include <gtest/gtest.h>

#include "launch/launch_env.h"
#include "parallel/process_grid.h"
#include "parallel/solo_communicator.h"
#include "test_util.h"

namespace loom {
namespace {

// A launch as bind_gpu records it where two processes of a host share its one GPU.
class SharedGpuLaunch {
 public:
  SharedGpuLaunch() : saved_(current_launch()) {
    LaunchInfo shared = saved_;
    shared.device = 0;
    shared.gpu_sharing = "2 processes on host node07 but only 1 GPU: start at most 1 per node";
    record_launch(shared);
  }
  ~SharedGpuLaunch() { record_launch(saved_); }

 private:
  LaunchInfo saved_;
};

TEST(DeviceRunTest, ProcessesSharingAGpuTrainThereOnlyWhenAskedTo) {
  const SharedGpuLaunch launch;
  parallel::SoloCommunicator world("world");
  const parallel::ProcessGrid grid(world, parallel::GridShape{1, 1, 1});
  const GPTConfig model{2, 4, 128, 96, 16};
  config::RunConfig cfg;
  // DEVICE_AUTO: one sentence saying what is shared and how to choose.
  const std::string error = testing::user_error_of([&] { DeviceRun::create(cfg, grid, model, 2, 16); });
  EXPECT_EQ(error.find("2 processes on host node07 but only 1 GPU"), 0u) << error;
  EXPECT_NE(error.find("DEVICE_CUDA to share the GPUs"), std::string::npos) << error;
  EXPECT_NE(error.find("DEVICE_CPU"), std::string::npos) << error;
  // DEVICE_CPU, and fp32 under DEVICE_AUTO, stay on the CPU without a word.
  cfg.mutable_train()->set_device(config::TrainConfig::DEVICE_CPU);
  EXPECT_EQ(DeviceRun::create(cfg, grid, model, 2, 16), nullptr);
  cfg.mutable_train()->set_device(config::TrainConfig::DEVICE_AUTO);
  cfg.mutable_train()->set_precision(config::TrainConfig::PRECISION_FP32);
  EXPECT_EQ(DeviceRun::create(cfg, grid, model, 2, 16), nullptr);
}

TEST(DeviceRunTest, NoGpuMeansTheCpuUnlessTheGpuIsRequired) {
  if (current_launch().device >= 0) GTEST_SKIP() << "this process has a GPU";
  parallel::SoloCommunicator world("world");
  const parallel::ProcessGrid grid(world, parallel::GridShape{1, 1, 1});
  config::RunConfig cfg;
  EXPECT_EQ(DeviceRun::create(cfg, grid, GPTConfig{2, 4, 128, 96, 16}, 2, 16), nullptr);
  cfg.mutable_train()->set_device(config::TrainConfig::DEVICE_CUDA);
  EXPECT_THROW(DeviceRun::create(cfg, grid, GPTConfig{2, 4, 128, 96, 16}, 2, 16), UserError);
}

}  // namespace
}  // namespace loom
