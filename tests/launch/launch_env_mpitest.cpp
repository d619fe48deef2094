// Rank discovery on real MPI worlds: what mpirun announced agrees with MPI, the ranks of a host and
// their cores are found, and an error found on one rank only reaches every rank as the same
// UserError (none is left waiting).
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>

#include "core/base/check.h"
#include "launch/launch_env.h"
#include "mpi_test_util.h"
#include "parallel/mpi_communicator.h"

namespace loom {
namespace {

parallel::MpiCommunicator& mpi_world() {
  return dynamic_cast<parallel::MpiCommunicator&>(testing::mpi_world());
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(LaunchEnvMpiTest, MpirunsAnnouncementAgreesWithMpi) {
  parallel::MpiCommunicator& world = mpi_world();
  const std::unique_ptr<parallel::Communicator> host = world.split_by_host("host");
  const LaunchEnv env = detect_launch(process_environment());
  ASSERT_EQ(env.launcher, Launcher::kOpenMpi) << "this test runs under mpirun";
  const LaunchInfo info = resolve_launch(env, world, *host);
  EXPECT_EQ(info.rank, world.rank());
  EXPECT_EQ(info.world_size, world.size());
  EXPECT_EQ(info.local_rank, env.local_rank);
  EXPECT_EQ(info.local_size, env.local_size);
  EXPECT_EQ(info.hosts, 1);  // ctest runs every rank here
  EXPECT_GE(info.cpu_share, 1);
  EXPECT_LE(info.cpu_share, info.cpus);
  EXPECT_NE(info.describe().find("mpirun: " + std::to_string(world.size()) + " process"), std::string::npos)
      << info.describe();
}

TEST(LaunchEnvMpiTest, AnErrorOnTheLastRankOnlyReachesEveryRank) {
  parallel::Communicator& world = mpi_world();
  const int last = world.size() - 1;
  EXPECT_EQ(error_of([&] { agree_on_error(world, ""); }), "(no error)");
  const std::string e =
      error_of([&] { agree_on_error(world, world.rank() == last ? "4 processes on host h but only 2 GPUs" : ""); });
  const std::string expected = (last == 0 ? "" : "rank " + std::to_string(last) + ": ") +
                               "4 processes on host h but only 2 GPUs";
  EXPECT_EQ(e, expected);
  // Several ranks: the lowest one's message.
  const std::string first = error_of([&] {
    agree_on_error(world, world.rank() >= last / 2 ? "problem of rank " + std::to_string(world.rank()) : "");
  });
  const int lowest = last / 2;
  EXPECT_EQ(first, (lowest == 0 ? "" : "rank " + std::to_string(lowest) + ": ") + "problem of rank " +
                       std::to_string(lowest));
}

TEST(LaunchEnvMpiTest, ALocalMismatchOnOneRankFailsThemAll) {
  parallel::MpiCommunicator& world = mpi_world();
  const std::unique_ptr<parallel::Communicator> host = world.split_by_host("host");
  LaunchEnv env = detect_launch(process_environment());
  if (world.rank() == world.size() - 1) env.local_size = env.local_size + 1;  // a wrong announcement
  const std::string e = error_of([&] { resolve_launch(env, world, *host); });
  EXPECT_NE(e.find("mpirun placed " + std::to_string(world.size() + 1) + " processes on host"), std::string::npos)
      << e;
}

}  // namespace
}  // namespace loom
