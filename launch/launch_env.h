// How this process was started and where it sits among the job's processes: standalone, under
// Open MPI's mpirun, or as a task of Slurm's srun.
//
// Two stages. detect_launch() reads only the environment (a pure function of it, unit-tested with
// fake environments) and says what the launcher announced and whether MPI can be initialised.
// resolve_launch() runs after MPI_Init: it takes rank, world and the ranks sharing this host
// from MPI itself, checks them against the announcement (srun without a PMI plugin starts N
// worlds of one process each), and gives each rank its share of the host's cores. Errors found
// on some ranks only are agreed over the world, so that every rank exits with the same sentence
// instead of waiting for the ones that left.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace loom {

enum class Launcher {
  kStandalone,  // no launcher: one process
  kOpenMpi,     // Open MPI's mpirun / mpiexec (OMPI_COMM_WORLD_*)
  kSlurm,       // a task of `srun` (SLURM_PROCID in a job step)
  kPmi,         // another launcher that speaks PMI or PMIx (MPICH's Hydra, PRRTE's prun)
};

const char* launcher_name(Launcher launcher);  // "standalone", "mpirun", "srun", "pmi"

using EnvMap = std::map<std::string, std::string>;

// This process's environment variables.
EnvMap process_environment();

// What the environment says about the launch. -1: not announced.
struct LaunchEnv {
  Launcher launcher = Launcher::kStandalone;
  int rank = 0;          // of the process in the job
  int world_size = 1;    // processes the launcher started; -1 when it does not say (PMIx alone)
  int local_rank = -1;   // among the processes on this host
  int local_size = -1;   // processes on this host
  // How the MPI library can find its peers: "mpirun", "pmix", "pmi2", or "" (it cannot: MPI is
  // not initialised, and the process is a world of its own).
  std::string wire_up;
  bool init_mpi() const { return !wire_up.empty(); }
};

// Reads the launcher's variables. Open MPI's come first: mpirun inside a Slurm allocation starts
// its processes through srun and they carry SLURM_* of that helper step too. A Slurm batch script
// (sbatch) carries SLURM_PROCID and SLURM_NTASKS of the job, not of a step: without srun's
// SLURM_STEP_NUM_TASKS the process is standalone. UserError for a launcher variable that is not a
// number in range.
LaunchEnv detect_launch(const EnvMap& env);

// UserError when the launcher started several processes that cannot form one MPI world (srun
// without a PMI plugin). Every process raises the same error; launch/main.cpp prints it on the
// launcher's rank 0 only.
void check_can_start(const LaunchEnv& env);

// The job as this rank sees it after MPI_Init.
struct LaunchInfo {
  Launcher launcher = Launcher::kStandalone;
  std::string wire_up;    // as in LaunchEnv
  int rank = 0;           // in the world
  int world_size = 1;
  int local_rank = 0;     // among the ranks on this host (MPI's shared-memory group)
  int local_size = 1;
  int hosts = 1;          // hosts the job runs on
  std::string host;       // this host's name
  int cpus = 1;           // cores this process may run on (its affinity mask)
  int cpu_share = 1;      // its share of them, each core divided among the host's ranks that may use it
  int device = -1;        // the GPU picked by bind_gpu; -1: none (CPU)
  // "" when every process of the job that has a GPU has one of its own; else the sentence saying
  // where processes share one (gpu_sharing_problem's), the same on every rank.
  std::string gpu_sharing;

  // One line for the layout print, e.g. "srun (pmix): 8 processes on 2 hosts, rank 0 on node07
  // (local rank 0 of 4)"; "standalone on HOST" for one process.
  std::string describe() const;
};

// Rank, world, local rank and size from `world` and `host` (the ranks of `world` on this host:
// parallel::MpiCommunicator::split_by_host, or a one-rank communicator without MPI), checked
// against what `env` announced; the cores of this process shared out over `host`. Collective over
// both. Throws the same UserError on every rank when any rank found a mismatch.
LaunchInfo resolve_launch(const LaunchEnv& env, parallel::Communicator& world,
                          parallel::Communicator& host);

// Picks this rank's GPU of its host (core/base/device.h) when the build has CUDA and the host
// has GPUs; with none, the process trains on the CPU. Each rank takes device local_rank (modulo
// the GPUs it sees when there are more ranks), or the only device it sees when the launcher gave
// every process its own GPU (CUDA_VISIBLE_DEVICES per task). Ranks that end up on one GPU are
// allowed but recorded in info.gpu_sharing: only train.device DEVICE_CUDA trains on GPUs shared
// that way (through host memory, launch/device_run.h). Asks the driver only: the CUDA code is
// loaded, and the device made current, when a run trains on it (launch/cuda_plugin.h).
// Collective over `world` and `host`; the same UserError on every rank when any rank failed.
// Sets info.device and info.gpu_sharing.
void bind_gpu(LaunchInfo& info, parallel::Communicator& world, parallel::Communicator& host);

// The launch recorded by launch/main.cpp for the commands to read (the layout line, the thread
// count); standalone on this host (with this process's cores) until it records one.
const LaunchInfo& current_launch();
void record_launch(const LaunchInfo& info);

// --- the pieces, exposed for the tests -------------------------------------------------------

// Every rank's `text` (its first 255 characters), in rank order. Collective over `group`.
std::vector<std::string> all_gather_text(parallel::Communicator& group, const std::string& text);

// Collective over `world`: when any rank's `error` is non-empty, every rank throws UserError with
// the message of the lowest such rank (prefixed by its rank when that is not rank 0).
void agree_on_error(parallel::Communicator& world, const std::string& error);

// The problems of what MPI says against what the launcher announced, as one sentence ("" when
// they agree).
std::string launch_mismatch(const LaunchEnv& env, int rank, int world_size, int local_rank,
                            int local_size, const std::string& host);

// Tasks on node `node` of a Slurm task list such as "4(x2),3" (4, 4 and 3 tasks); -1 when the
// list is malformed or has no such node.
int slurm_tasks_on_node(const std::string& tasks_per_node, int node);

// The cores of local rank `me`, each counted as 1/k when k ranks of the host may run on it
// (`cpus_of` lists each local rank's cores), rounded down, at least 1.
int cpu_share_of(const std::vector<std::vector<int>>& cpus_of, int me);

// The cores this process may run on (its affinity mask), in increasing order.
std::vector<int> affinity_cpus();

// "" when no two local ranks hold the same GPU (`device_ids` lists each local rank's, by PCI bus
// id; "" for a rank without one); else the sentence naming the host and how many GPUs it has.
std::string gpu_sharing_problem(const std::vector<std::string>& device_ids, const std::string& host);

}  // namespace loom
