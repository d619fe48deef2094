// Rank discovery from fake environments (standalone, mpirun, srun with and without a PMI plugin,
// an sbatch script, mpirun inside a Slurm allocation), the checks of MPI's answer against the
// launcher's, the share of cores per rank, the GPU checks, and `loom` started as srun would start
// it.
#include "launch/launch_env.h"

#include <functional>
#include <string>
#include <vector>

#include "core/base/check.h"
#include "core/base/device.h"
#include "launch/loom_process.h"
#include "launch/run_setup.h"
#include "parallel/solo_communicator.h"
#include "test_util.h"

namespace loom {
namespace {

using testing::user_error_of;

// What Open MPI's mpirun exports (besides PMIx's own variables).
EnvMap mpirun_env(int rank, int size, int local_rank, int local_size) {
  return {{"OMPI_COMM_WORLD_RANK", std::to_string(rank)},
          {"OMPI_COMM_WORLD_SIZE", std::to_string(size)},
          {"OMPI_COMM_WORLD_LOCAL_RANK", std::to_string(local_rank)},
          {"OMPI_COMM_WORLD_LOCAL_SIZE", std::to_string(local_size)},
          {"PMIX_RANK", std::to_string(rank)},
          {"PMIX_NAMESPACE", "1206255617"}};
}

// What an sbatch script carries: the job's variables, no step's.
EnvMap sbatch_env() {
  return {{"SLURM_JOB_ID", "200505"}, {"SLURM_NTASKS", "8"},     {"SLURM_NPROCS", "8"},
          {"SLURM_PROCID", "0"},      {"SLURM_LOCALID", "0"},    {"SLURM_NODEID", "0"},
          {"SLURM_TASKS_PER_NODE", "4(x2)"}, {"SLURM_CPUS_ON_NODE", "64"}};
}

// ... and one task of `srun -n 8` over two nodes inside it.
EnvMap srun_env(int rank, const std::string& mpi_plugin) {
  EnvMap env = sbatch_env();
  env["SLURM_STEP_ID"] = "0";
  env["SLURM_STEPID"] = "0";
  env["SLURM_STEP_NUM_TASKS"] = "8";
  env["SLURM_STEP_TASKS_PER_NODE"] = "4(x2)";
  env["SLURM_PROCID"] = std::to_string(rank);
  env["SLURM_LOCALID"] = std::to_string(rank % 4);
  env["SLURM_NODEID"] = std::to_string(rank / 4);
  if (mpi_plugin == "pmix") {
    env["PMIX_RANK"] = std::to_string(rank);
    env["PMIX_NAMESPACE"] = "slurm.pmix.200505.0";
  } else if (mpi_plugin == "pmi2") {
    env["PMI_RANK"] = std::to_string(rank);
    env["PMI_SIZE"] = "8";
    env["PMI_FD"] = "5";
    env["PMI_JOBID"] = "200505.0";
  }
  return env;
}

TEST(LaunchEnvTest, NoLauncherIsOneStandaloneProcess) {
  const LaunchEnv env = detect_launch({{"HOME", "/root"}, {"OMP_NUM_THREADS", "2"}});
  EXPECT_EQ(env.launcher, Launcher::kStandalone);
  EXPECT_EQ(env.rank, 0);
  EXPECT_EQ(env.world_size, 1);
  EXPECT_FALSE(env.init_mpi());
  EXPECT_NO_THROW(check_can_start(env));
}

TEST(LaunchEnvTest, MpirunAnnouncesRankWorldAndLocalRanks) {
  const LaunchEnv env = detect_launch(mpirun_env(5, 8, 1, 4));
  EXPECT_EQ(env.launcher, Launcher::kOpenMpi);
  EXPECT_EQ(env.rank, 5);
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_size, 4);
  EXPECT_TRUE(env.init_mpi());
  EXPECT_STREQ(launcher_name(env.launcher), "mpirun");
}

TEST(LaunchEnvTest, SrunTasksWithPmixStartMpiAndPmi2IsRefused) {
  for (const std::string plugin : {"pmix", "pmi2"}) {
    const LaunchEnv env = detect_launch(srun_env(6, plugin));
    EXPECT_EQ(env.launcher, Launcher::kSlurm) << plugin;
    EXPECT_EQ(env.rank, 6) << plugin;
    EXPECT_EQ(env.world_size, 8) << plugin;
    EXPECT_EQ(env.local_rank, 2) << plugin;
    EXPECT_EQ(env.local_size, 4) << plugin;
    EXPECT_EQ(env.wire_up, plugin);
  }
  EXPECT_NO_THROW(check_can_start(detect_launch(srun_env(6, "pmix"))));
  // Open MPI has no PMI-2 client in the build loom uses: one sentence instead of MPI_Init failing.
  const std::string e = user_error_of([&] { check_can_start(detect_launch(srun_env(6, "pmi2"))); });
  EXPECT_NE(e.find("srun started 8 tasks with --mpi=pmi2"), std::string::npos) << e;
  EXPECT_NE(e.find("srun --mpi=pmix"), std::string::npos) << e;
}

TEST(LaunchEnvTest, SrunWithoutPmiPluginIsRefusedBeforeMpiStarts) {
  const LaunchEnv env = detect_launch(srun_env(3, "none"));
  EXPECT_EQ(env.launcher, Launcher::kSlurm);
  EXPECT_EQ(env.rank, 3);
  EXPECT_FALSE(env.init_mpi());
  const std::string e = user_error_of([&] { check_can_start(env); });
  EXPECT_NE(e.find("srun started 8 tasks without a PMI plugin"), std::string::npos) << e;
  EXPECT_NE(e.find("srun --mpi=pmix"), std::string::npos) << e;
  EXPECT_NE(e.find("mpirun"), std::string::npos) << e;

  // One task needs no MPI.
  EnvMap one = srun_env(0, "none");
  one["SLURM_STEP_NUM_TASKS"] = "1";
  one["SLURM_STEP_TASKS_PER_NODE"] = "1";
  EXPECT_NO_THROW(check_can_start(detect_launch(one)));
}

TEST(LaunchEnvTest, AnSbatchScriptIsStandaloneWhateverItsTaskCount) {
  const LaunchEnv env = detect_launch(sbatch_env());
  EXPECT_EQ(env.launcher, Launcher::kStandalone);
  EXPECT_EQ(env.world_size, 1);
  EXPECT_NO_THROW(check_can_start(env));
  // Newer Slurm names the batch step with a special step id: still not an srun step.
  EnvMap batch = sbatch_env();
  batch["SLURM_STEP_ID"] = "4294967291";
  EXPECT_EQ(detect_launch(batch).launcher, Launcher::kStandalone);
  // An older srun without SLURM_STEP_NUM_TASKS: a regular step id and the job's task count.
  EnvMap old_srun = sbatch_env();
  old_srun["SLURM_STEP_ID"] = "2";
  old_srun["SLURM_PROCID"] = "7";
  old_srun["PMIX_RANK"] = "7";
  const LaunchEnv old = detect_launch(old_srun);
  EXPECT_EQ(old.launcher, Launcher::kSlurm);
  EXPECT_EQ(old.rank, 7);
  EXPECT_EQ(old.world_size, 8);
}

TEST(LaunchEnvTest, MpirunInsideASlurmAllocationTakesPrecedence) {
  // mpirun starts its daemons with srun: its processes carry that helper step's SLURM_* too.
  EnvMap env = srun_env(1, "none");
  env["SLURM_STEP_NUM_TASKS"] = "2";  // one daemon per node
  for (const auto& [name, value] : mpirun_env(9, 16, 1, 8)) env[name] = value;
  const LaunchEnv l = detect_launch(env);
  EXPECT_EQ(l.launcher, Launcher::kOpenMpi);
  EXPECT_EQ(l.rank, 9);
  EXPECT_EQ(l.world_size, 16);
  EXPECT_EQ(l.local_size, 8);
  EXPECT_NO_THROW(check_can_start(l));
}

TEST(LaunchEnvTest, OtherPmiLaunchers) {
  const LaunchEnv hydra = detect_launch({{"PMI_RANK", "2"}, {"PMI_SIZE", "4"}, {"MPI_LOCALRANKID", "2"},
                                         {"MPI_LOCALNRANKS", "4"}});
  EXPECT_EQ(hydra.launcher, Launcher::kPmi);
  EXPECT_EQ(hydra.rank, 2);
  EXPECT_EQ(hydra.world_size, 4);
  EXPECT_EQ(hydra.local_size, 4);
  EXPECT_TRUE(hydra.init_mpi());
  // Hydra inside an allocation starts its proxies with srun: the PMI world is the job's.
  EnvMap nested = srun_env(0, "none");
  nested["SLURM_STEP_NUM_TASKS"] = "2";
  nested["PMI_RANK"] = "5";
  nested["PMI_SIZE"] = "16";
  const LaunchEnv n = detect_launch(nested);
  EXPECT_EQ(n.launcher, Launcher::kPmi);
  EXPECT_EQ(n.rank, 5);
  EXPECT_EQ(n.world_size, 16);
  const LaunchEnv pmix = detect_launch({{"PMIX_RANK", "3"}});
  EXPECT_EQ(pmix.launcher, Launcher::kPmi);
  EXPECT_EQ(pmix.rank, 3);
  EXPECT_EQ(pmix.world_size, -1);
  EXPECT_TRUE(pmix.init_mpi());
}

TEST(LaunchEnvTest, MalformedLauncherVariablesAreOneSentence) {
  EnvMap env = mpirun_env(0, 4, 0, 4);
  env["OMPI_COMM_WORLD_SIZE"] = "four";
  std::string e = user_error_of([&] { detect_launch(env); });
  EXPECT_NE(e.find("OMPI_COMM_WORLD_SIZE='four' is not a number"), std::string::npos) << e;
  env = mpirun_env(4, 4, 0, 4);
  e = user_error_of([&] { detect_launch(env); });
  EXPECT_NE(e.find("rank 4 of 4"), std::string::npos) << e;
}

TEST(LaunchEnvTest, SlurmTaskListsPerNode) {
  EXPECT_EQ(slurm_tasks_on_node("4(x2),3", 0), 4);
  EXPECT_EQ(slurm_tasks_on_node("4(x2),3", 1), 4);
  EXPECT_EQ(slurm_tasks_on_node("4(x2),3", 2), 3);
  EXPECT_EQ(slurm_tasks_on_node("4(x2),3", 3), -1);
  EXPECT_EQ(slurm_tasks_on_node("2", 0), 2);
  EXPECT_EQ(slurm_tasks_on_node("2(x", 0), -1);
  EXPECT_EQ(slurm_tasks_on_node("x", 0), -1);
  EXPECT_EQ(slurm_tasks_on_node("", 0), -1);
}

TEST(LaunchEnvTest, MpisAnswerIsCheckedAgainstTheLaunchers) {
  // srun with a plugin MPI could not use: every task is a world of one.
  const LaunchEnv srun = detect_launch(srun_env(3, "pmi2"));
  std::string e = launch_mismatch(srun, 0, 1, 0, 1, "node07");
  EXPECT_NE(e.find("srun started 8 tasks but MPI joined them into worlds of 1"), std::string::npos) << e;
  EXPECT_NE(e.find("srun --mpi=pmix"), std::string::npos) << e;
  e = launch_mismatch(detect_launch(mpirun_env(1, 4, 1, 4)), 0, 1, 0, 1, "node07");
  EXPECT_NE(e.find("mpirun started 4 processes but MPI formed a world of 1"), std::string::npos) << e;
  // Agreement.
  EXPECT_EQ(launch_mismatch(srun, 3, 8, 3, 4, "node07"), "");
  EXPECT_EQ(launch_mismatch(detect_launch({}), 0, 1, 0, 1, "node07"), "");
  // A host that MPI sees split in two (one container per process).
  e = launch_mismatch(srun, 3, 8, 0, 1, "node07");
  EXPECT_NE(e.find("srun placed 4 processes on host node07 but MPI finds 1 there"), std::string::npos) << e;
  e = launch_mismatch(srun, 2, 8, 3, 4, "node07");
  EXPECT_NE(e.find("srun numbers this process 3 but MPI numbers it 2"), std::string::npos) << e;
}

TEST(LaunchEnvTest, ResolveWithoutMpiChecksTheAnnouncedWorld) {
  parallel::SoloCommunicator world("world"), host("host");
  const LaunchInfo info = resolve_launch(detect_launch({}), world, host);
  EXPECT_EQ(info.rank, 0);
  EXPECT_EQ(info.world_size, 1);
  EXPECT_EQ(info.local_size, 1);
  EXPECT_EQ(info.hosts, 1);
  EXPECT_EQ(info.cpus, static_cast<int>(affinity_cpus().size()));
  EXPECT_EQ(info.cpu_share, info.cpus);
  EXPECT_FALSE(info.host.empty());
  EXPECT_EQ(info.describe().rfind("standalone on " + info.host, 0), 0u) << info.describe();
  // An srun task whose MPI formed a world of one: refused.
  const std::string e = user_error_of([&] { resolve_launch(detect_launch(srun_env(0, "pmix")), world, host); });
  EXPECT_NE(e.find("srun started 8 tasks but MPI joined them into worlds of 1"), std::string::npos) << e;
}

TEST(LaunchEnvTest, DescribeNamesLauncherWorldAndHost) {
  LaunchInfo info;
  info.launcher = Launcher::kSlurm;
  info.wire_up = "pmix";
  info.rank = 0;
  info.world_size = 8;
  info.local_size = 4;
  info.hosts = 2;
  info.host = "node07";
  info.cpu_share = 16;
  EXPECT_EQ(info.describe(), "srun (pmix): 8 processes on 2 hosts; rank 0 on node07, local rank 0 of 4, 16 cores");
}

TEST(LaunchEnvTest, CoresAreSharedAmongTheRanksThatMayUseThem) {
  // Unbound: 4 ranks on the same 8 cores get 2 each; on 2 cores, at least 1.
  const std::vector<int> eight = {0, 1, 2, 3, 4, 5, 6, 7};
  EXPECT_EQ(cpu_share_of({eight, eight, eight, eight}, 2), 2);
  EXPECT_EQ(cpu_share_of({{0, 1}, {0, 1}, {0, 1}, {0, 1}}, 0), 1);
  // Bound by the launcher (mpirun --bind-to core, srun --cpus-per-task): each its own cores.
  EXPECT_EQ(cpu_share_of({{0, 1, 2, 3}, {4, 5, 6, 7}}, 1), 4);
  EXPECT_EQ(cpu_share_of({{0}, {1}}, 0), 1);
  // Bound to sockets shared by two ranks each.
  const std::vector<int> s0 = {0, 1, 2, 3}, s1 = {4, 5, 6, 7};
  EXPECT_EQ(cpu_share_of({s0, s0, s1, s1}, 3), 2);
  // Alone.
  EXPECT_EQ(cpu_share_of({eight}, 0), 8);
}

TEST(LaunchEnvTest, ThreadsZeroMeansTheRanksShareOfItsHost) {
  LaunchInfo launch;
  launch.cpu_share = 1;
  EXPECT_EQ(set_thread_count(0, launch), 1);
  EXPECT_EQ(set_thread_count(3, launch), 3);
  launch.cpu_share = 2;
  EXPECT_EQ(set_thread_count(0, launch), 2);
  EXPECT_EQ(set_thread_count(0), current_launch().cpu_share);  // standalone here: every core
  EXPECT_EQ(current_launch().cpu_share, static_cast<int>(affinity_cpus().size()));
}

TEST(LaunchEnvTest, TwoRanksOfAHostOnOneGpuAreRefused) {
  EXPECT_EQ(gpu_sharing_problem({"0000:3B:00.0", "0000:5E:00.0"}, "node07"), "");
  EXPECT_EQ(gpu_sharing_problem({"", ""}, "node07"), "");
  EXPECT_EQ(gpu_sharing_problem({"0000:3B:00.0", "0000:5E:00.0", "0000:3B:00.0", "0000:5E:00.0"}, "node07"),
            "4 processes on host node07 but only 2 GPUs: start at most 2 per node");
  EXPECT_EQ(gpu_sharing_problem({"0000:3B:00.0", "0000:3B:00.0"}, "node07"),
            "2 processes on host node07 but only 1 GPU: start at most 1 per node");
}

TEST(LaunchEnvTest, NoGpuMeansCpuAndIsNoError) {
  // The CPU build, and a CUDA build on a machine without a GPU (this one), see no device.
  const int count = device_count();
  EXPECT_GE(count, 0);
  if (count == 0) {
    EXPECT_EQ(pick_device(0, 4), -1);
    parallel::SoloCommunicator world("world"), host("host");
    LaunchInfo info = resolve_launch(detect_launch({}), world, host);
    EXPECT_NO_THROW(bind_gpu(info, world, host));
    EXPECT_EQ(info.device, -1);
  } else {
    EXPECT_EQ(pick_device(count - 1, count), count - 1);
    EXPECT_EQ(user_error_of([&] { pick_device(0, count + 1); }).find(std::to_string(count + 1) + " processes on host"),
              0u);
  }
}

// `loom` as srun starts it, through the environment.
TEST(LaunchEnvTest, LoomUnderSrunWithoutPmiSaysSoOnRankZeroOnly) {
  const std::string srun = "SLURM_JOB_ID=1 SLURM_STEP_ID=0 SLURM_STEP_NUM_TASKS=4 SLURM_NTASKS=4 SLURM_LOCALID=0 ";
  testing::RunResult r = testing::run_loom_env(srun + "SLURM_PROCID=0", "train --set train.steps=1");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.err.find("loom train: error: srun started 4 tasks without a PMI plugin"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  r = testing::run_loom_env(srun + "SLURM_PROCID=2", "train --set train.steps=1");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_EQ(r.out, "") << "only rank 0 prints";
  // In an sbatch script (no step), loom is one process.
  r = testing::run_loom_env("SLURM_JOB_ID=1 SLURM_NTASKS=4 SLURM_PROCID=0 SLURM_LOCALID=0", "train --help");
  EXPECT_EQ(r.exit_code, 0) << r.out;
}

}  // namespace
}  // namespace loom
