// Rank discovery, the launch cross-checks, each rank's share of the cores and its GPU
// (launch_env.h).
#include "launch/launch_env.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <set>

#include "core/base/check.h"
#include "core/base/device.h"

extern char** environ;

namespace loom {

namespace {

std::string this_host() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "?";
  return name;
}

const std::string* find(const EnvMap& env, const char* name) {
  auto it = env.find(name);
  return it == env.end() ? nullptr : &it->second;
}

// A launcher variable as a number >= `min`; nullopt when unset.
std::optional<int> env_int(const EnvMap& env, const char* name, int min) {
  const std::string* value = find(env, name);
  if (value == nullptr) return std::nullopt;
  size_t used = 0;
  long parsed = -1;
  try {
    parsed = std::stol(*value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != value->size() || parsed < min || parsed > INT32_MAX) {
    fail_user("environment variable", std::string(name) + "='" + *value + "'", "is not a number >=", min,
              "(launchers set it; unset it when not starting loom through one)");
  }
  return static_cast<int>(parsed);
}

// Slurm's step ids above this are its special steps (batch script, extern, interactive).
constexpr long long kSlurmMaxStepId = 0xFFFFFFF0LL;

bool is_srun_step(const EnvMap& env) {
  if (find(env, "SLURM_PROCID") == nullptr) return false;
  if (find(env, "SLURM_STEP_NUM_TASKS") != nullptr) return true;
  // Older Slurm: a step id that is not the batch script's.
  const std::string* step = find(env, "SLURM_STEP_ID");
  if (step == nullptr) step = find(env, "SLURM_STEPID");
  if (step == nullptr || step->empty() || find(env, "SLURM_NTASKS") == nullptr) return false;
  try {
    return std::stoll(*step) < kSlurmMaxStepId;
  } catch (const std::exception&) {
    return false;
  }
}

std::string plural(int n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

// Each rank's cores as a bit mask of fixed size, so that the host's masks can be all-gathered.
constexpr int kMaskWords = CPU_SETSIZE / 32;

std::vector<int32_t> mask_of(const std::vector<int>& cpus) {
  std::vector<int32_t> words(kMaskWords, 0);
  for (int cpu : cpus) {
    if (cpu >= 0 && cpu < CPU_SETSIZE) {
      words[static_cast<size_t>(cpu / 32)] =
          static_cast<int32_t>(static_cast<uint32_t>(words[static_cast<size_t>(cpu / 32)]) | (1u << (cpu % 32)));
    }
  }
  return words;
}

std::vector<int> cpus_of_mask(const int32_t* words) {
  std::vector<int> cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if ((static_cast<uint32_t>(words[cpu / 32]) >> (cpu % 32)) & 1u) cpus.push_back(cpu);
  }
  return cpus;
}

LaunchInfo standalone_here() {
  LaunchInfo info;
  info.host = this_host();
  info.cpus = std::max<int>(1, static_cast<int>(affinity_cpus().size()));
  info.cpu_share = info.cpus;
  return info;
}

std::optional<LaunchInfo>& recorded_launch() {
  static std::optional<LaunchInfo> launch;
  return launch;
}

}  // namespace

const char* launcher_name(Launcher launcher) {
  switch (launcher) {
    case Launcher::kStandalone: return "standalone";
    case Launcher::kOpenMpi: return "mpirun";
    case Launcher::kSlurm: return "srun";
    case Launcher::kPmi: return "pmi";
  }
  return "?";
}

EnvMap process_environment() {
  EnvMap env;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const char* eq = std::strchr(*entry, '=');
    if (eq != nullptr) env.emplace(std::string(*entry, static_cast<size_t>(eq - *entry)), std::string(eq + 1));
  }
  return env;
}

LaunchEnv detect_launch(const EnvMap& env) {
  LaunchEnv out;
  if (find(env, "OMPI_COMM_WORLD_SIZE") != nullptr) {
    out.launcher = Launcher::kOpenMpi;
    out.world_size = *env_int(env, "OMPI_COMM_WORLD_SIZE", 1);
    out.rank = env_int(env, "OMPI_COMM_WORLD_RANK", 0).value_or(0);
    out.local_rank = env_int(env, "OMPI_COMM_WORLD_LOCAL_RANK", 0).value_or(-1);
    out.local_size = env_int(env, "OMPI_COMM_WORLD_LOCAL_SIZE", 1).value_or(-1);
    out.wire_up = "mpirun";
  } else if (is_srun_step(env)) {
    const int tasks = find(env, "SLURM_STEP_NUM_TASKS") != nullptr ? *env_int(env, "SLURM_STEP_NUM_TASKS", 1)
                                                                   : *env_int(env, "SLURM_NTASKS", 1);
    const std::optional<int> pmi_size = env_int(env, "PMI_SIZE", 1);
    if (pmi_size && *pmi_size != tasks) {
      // Not an srun task: a process of a PMI launcher (MPICH's Hydra) whose helpers srun started.
      out.launcher = Launcher::kPmi;
      out.world_size = *pmi_size;
      out.rank = env_int(env, "PMI_RANK", 0).value_or(0);
      out.local_rank = env_int(env, "MPI_LOCALRANKID", 0).value_or(-1);
      out.local_size = env_int(env, "MPI_LOCALNRANKS", 1).value_or(-1);
      out.wire_up = "pmi";
    } else {
      out.launcher = Launcher::kSlurm;
      out.world_size = tasks;
      out.rank = *env_int(env, "SLURM_PROCID", 0);
      out.local_rank = env_int(env, "SLURM_LOCALID", 0).value_or(-1);
      const std::string* per_node = find(env, "SLURM_STEP_TASKS_PER_NODE");
      const std::optional<int> node = env_int(env, "SLURM_NODEID", 0);
      if (per_node != nullptr && node) out.local_size = slurm_tasks_on_node(*per_node, *node);
      if (find(env, "PMIX_RANK") != nullptr) {
        out.wire_up = "pmix";
      } else if (find(env, "PMI_RANK") != nullptr || find(env, "PMI_FD") != nullptr) {
        out.wire_up = "pmi2";
      }
    }
  } else if (find(env, "PMI_SIZE") != nullptr) {
    out.launcher = Launcher::kPmi;
    out.world_size = *env_int(env, "PMI_SIZE", 1);
    out.rank = env_int(env, "PMI_RANK", 0).value_or(0);
    out.local_rank = env_int(env, "MPI_LOCALRANKID", 0).value_or(-1);
    out.local_size = env_int(env, "MPI_LOCALNRANKS", 1).value_or(-1);
    out.wire_up = "pmi";
  } else if (find(env, "PMIX_RANK") != nullptr) {
    out.launcher = Launcher::kPmi;
    out.rank = *env_int(env, "PMIX_RANK", 0);
    out.world_size = -1;  // PMIx tells its size to MPI only
    out.wire_up = "pmix";
  }
  if (out.world_size > 0 && out.rank >= out.world_size) {
    fail_user(launcher_name(out.launcher), "says this process is rank", out.rank, "of", out.world_size,
              "processes, which cannot be; start loom again through the launcher");
  }
  if (out.local_size > 0 && out.local_rank >= out.local_size) out.local_size = -1;  // inconsistent: ignore
  return out;
}

void check_can_start(const LaunchEnv& env) {
  // Open MPI joins srun's tasks through PMIx; its PMI-1/2 clients are optional components that
  // Debian's build (the one loom is built with) does not have, so MPI_Init would fail with a
  // page of Open MPI's own text instead.
  if (env.launcher == Launcher::kSlurm && env.wire_up == "pmi2" && env.world_size > 1) {
    fail_user("srun started", env.world_size,
              "tasks with --mpi=pmi2, but loom's MPI (Open MPI) joins srun tasks through PMIx: run "
              "`srun --mpi=pmix` (`srun --mpi=list` shows the plugins) or start loom with mpirun");
  }
  if (env.world_size > 1 && !env.init_mpi()) {
    fail_user("srun started", env.world_size,
              "tasks without a PMI plugin that MPI can connect them through (each would train alone): run "
              "`srun --mpi=pmix` (`srun --mpi=list` shows the plugins) or start loom with mpirun");
  }
}

std::string launch_mismatch(const LaunchEnv& env, int rank, int world_size, int local_rank, int local_size,
                            const std::string& host) {
  const char* who = launcher_name(env.launcher);
  if (env.world_size > 0 && world_size != env.world_size) {
    switch (env.launcher) {
      case Launcher::kSlurm:
        return str_cat("srun started", env.world_size, "tasks but MPI joined them into worlds of", world_size,
                       "(it did not connect through Slurm's PMI" +
                           (env.wire_up.empty() ? std::string() : " '" + env.wire_up + "'") +
                           "): run `srun --mpi=pmix` (`srun --mpi=list` shows the plugins) or start loom with mpirun");
      case Launcher::kOpenMpi:
        return str_cat("mpirun started", env.world_size, "processes but MPI formed a world of", world_size,
                       "(this mpirun is not of the MPI loom was built with): start loom with that MPI's mpirun");
      default:
        return str_cat("the launcher started", env.world_size, "processes but MPI formed a world of", world_size,
                       "(loom's MPI cannot join this launcher's processes): start loom with the mpirun of the MPI "
                       "it was built with, or with `srun --mpi=pmix`");
    }
  }
  if (env.launcher != Launcher::kStandalone && env.launcher != Launcher::kPmi && rank != env.rank) {
    return str_cat(who, "numbers this process", env.rank, "but MPI numbers it", rank, "on host", host + ":",
                   "start every process through one launcher");
  }
  if ((env.local_size > 0 && env.local_size != local_size) || (env.local_rank >= 0 && env.local_rank != local_rank)) {
    return str_cat(who, "placed", env.local_size > 0 ? std::to_string(env.local_size) : "its", "processes on host", host,
                   "but MPI finds", local_size, "there (this one is local rank", env.local_rank, "to", std::string(who) + ",",
                   std::to_string(local_rank) + " to MPI): run the processes of a host in one system, not one "
                   "container each, so that its GPUs and cores are shared out right");
  }
  return "";
}

int slurm_tasks_on_node(const std::string& tasks_per_node, int node) {
  if (node < 0) return -1;
  int index = 0;
  size_t pos = 0;
  while (pos < tasks_per_node.size()) {
    size_t end = tasks_per_node.find(',', pos);
    if (end == std::string::npos) end = tasks_per_node.size();
    const std::string item = tasks_per_node.substr(pos, end - pos);
    pos = end + 1;
    // "N" or "N(xK)"
    size_t digits = 0;
    while (digits < item.size() && std::isdigit(static_cast<unsigned char>(item[digits]))) ++digits;
    if (digits == 0 || digits > 9) return -1;
    const int tasks = std::stoi(item.substr(0, digits));
    int repeat = 1;
    if (digits != item.size()) {
      const std::string rest = item.substr(digits);
      if (rest.size() < 4 || rest.compare(0, 2, "(x") != 0 || rest.back() != ')') return -1;
      const std::string count = rest.substr(2, rest.size() - 3);
      if (count.empty() || count.size() > 9 ||
          !std::all_of(count.begin(), count.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
        return -1;
      }
      repeat = std::stoi(count);
    }
    if (node < index + repeat) return tasks;
    index += repeat;
  }
  return -1;
}

int cpu_share_of(const std::vector<std::vector<int>>& cpus_of, int me) {
  LOOM_CHECK(me >= 0 && me < static_cast<int>(cpus_of.size()), "local rank", me, "of", cpus_of.size());
  double share = 0;
  for (int cpu : cpus_of[static_cast<size_t>(me)]) {
    int sharing = 0;
    for (const std::vector<int>& cpus : cpus_of) {
      if (std::binary_search(cpus.begin(), cpus.end(), cpu)) ++sharing;
    }
    share += 1.0 / std::max(sharing, 1);
  }
  return std::max(1, static_cast<int>(std::floor(share + 1e-9)));
}

std::vector<int> affinity_cpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
    }
  }
  if (cpus.empty()) {
    const long online = sysconf(_SC_NPROCESSORS_ONLN);
    for (int cpu = 0; cpu < std::max(1L, online); ++cpu) cpus.push_back(cpu);
  }
  return cpus;
}

std::string gpu_sharing_problem(const std::vector<std::string>& device_ids, const std::string& host) {
  int with_gpu = 0;
  std::set<std::string> distinct;
  for (const std::string& id : device_ids) {
    if (id.empty()) continue;
    ++with_gpu;
    distinct.insert(id);
  }
  if (with_gpu == static_cast<int>(distinct.size())) return "";
  const int gpus = static_cast<int>(distinct.size());
  return str_cat(with_gpu, "processes on host", host, "but only", gpus, gpus == 1 ? "GPU:" : "GPUs:",
                 "start at most", gpus, "per node");
}

void agree_on_error(parallel::Communicator& world, const std::string& error) {
  // The lowest failing rank r reports size - r, so the maximum names it.
  int32_t first = error.empty() ? 0 : world.size() - world.rank();
  world.all_reduce(&first, &first, 1, DType::kI32, parallel::ReduceOp::kMax);
  if (first == 0) return;
  const int root = world.size() - first;
  int32_t length = world.rank() == root ? static_cast<int32_t>(error.size()) : 0;
  world.broadcast(&length, 1, DType::kI32, root);
  std::vector<int32_t> words((static_cast<size_t>(length) + 3) / 4, 0);
  if (world.rank() == root && length > 0) std::memcpy(words.data(), error.data(), error.size());
  if (!words.empty()) world.broadcast(words.data(), words.size(), DType::kI32, root);
  std::string message(reinterpret_cast<const char*>(words.data()), static_cast<size_t>(length));
  throw UserError(root == 0 ? message : "rank " + std::to_string(root) + ": " + message);
}

LaunchInfo resolve_launch(const LaunchEnv& env, parallel::Communicator& world, parallel::Communicator& host) {
  LaunchInfo info;
  info.launcher = env.launcher;
  info.wire_up = env.wire_up;
  info.rank = world.rank();
  info.world_size = world.size();
  info.local_rank = host.rank();
  info.local_size = host.size();
  info.host = this_host();

  // Cores: this rank's, and every core counted once over the ranks of the host that may use it.
  const std::vector<int> mine = affinity_cpus();
  info.cpus = static_cast<int>(mine.size());
  const std::vector<int32_t> my_mask = mask_of(mine);
  std::vector<int32_t> masks(static_cast<size_t>(kMaskWords) * static_cast<size_t>(host.size()));
  host.all_gather(my_mask.data(), masks.data(), kMaskWords, DType::kI32);
  std::vector<std::vector<int>> cpus_of;
  for (int r = 0; r < host.size(); ++r) cpus_of.push_back(cpus_of_mask(masks.data() + static_cast<size_t>(r) * kMaskWords));
  info.cpu_share = cpu_share_of(cpus_of, host.rank());

  int32_t hosts = host.rank() == 0 ? 1 : 0;
  world.all_reduce(&hosts, &hosts, 1, DType::kI32, parallel::ReduceOp::kSum);
  info.hosts = hosts;

  agree_on_error(world, launch_mismatch(env, info.rank, info.world_size, info.local_rank, info.local_size, info.host));
  return info;
}

void bind_gpu(LaunchInfo& info, parallel::Communicator& world, parallel::Communicator& host) {
  std::string error;
  try {
    // Each process sees one GPU: its own, unless they share it (found below). More processes
    // than GPUs share them round robin.
    const int count = device_count();
    const bool one_each = count == 1 && info.local_size > 1;
    const bool more_ranks = count > 0 && info.local_size > count;
    info.device = one_each ? 0 : more_ranks ? info.local_rank % count : pick_device(info.local_rank, info.local_size);
  } catch (const UserError& e) {
    error = e.what();
  }
  agree_on_error(world, error);

  // Where ranks share a GPU, every rank learns the first such host's sentence.
  const std::vector<std::string> ids = all_gather_text(host, device_pci_bus_id(info.device));
  info.gpu_sharing.clear();
  for (const std::string& s : all_gather_text(world, gpu_sharing_problem(ids, info.host))) {
    if (info.gpu_sharing.empty()) info.gpu_sharing = s;
  }
}

std::vector<std::string> all_gather_text(parallel::Communicator& group, const std::string& text) {
  constexpr size_t kWords = 64;  // 255 characters and the terminating zero
  std::vector<int32_t> mine(kWords, 0);
  std::memcpy(mine.data(), text.data(), std::min(text.size(), kWords * 4 - 1));
  std::vector<int32_t> all(kWords * static_cast<size_t>(group.size()));
  group.all_gather(mine.data(), all.data(), kWords, DType::kI32);
  std::vector<std::string> texts;
  for (int r = 0; r < group.size(); ++r) {
    const char* at = reinterpret_cast<const char*>(all.data() + static_cast<size_t>(r) * kWords);
    texts.emplace_back(at, strnlen(at, kWords * 4));
  }
  return texts;
}

std::string LaunchInfo::describe() const {
  const std::string cores = plural(cpu_share, "core", "cores");
  if (launcher == Launcher::kStandalone && world_size == 1) return "standalone on " + host + ", " + cores;
  std::string out = launcher_name(launcher);
  if (!wire_up.empty() && wire_up != out) out += " (" + wire_up + ")";
  out += ": " + plural(world_size, "process", "processes") + " on " + plural(hosts, "host", "hosts") + "; rank " +
         std::to_string(rank) + " on " + host + ", local rank " + std::to_string(local_rank) + " of " +
         std::to_string(local_size) + ", " + cores;
  if (device >= 0) out += ", GPU " + std::to_string(device);
  return out;
}

const LaunchInfo& current_launch() {
  std::optional<LaunchInfo>& launch = recorded_launch();
  if (!launch) launch = standalone_here();
  return *launch;
}

void record_launch(const LaunchInfo& info) { recorded_launch() = info; }

}  // namespace loom
