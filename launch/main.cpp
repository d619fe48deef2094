// The `loom` executable: dispatches to one subcommand and is the only place that turns an error
// into a printed sentence and an exit code (2: the user's input; 1: an internal failure).
//
// Started by a launcher (mpirun, srun), every process runs this main; MPI is initialised only
// then (launch/launch_env.h tells how the process was started), so a plain `loom train` needs no
// MPI runtime. A user error found while setting up (a bad config, a launch that cannot work) is
// raised identically on every rank and printed once by rank 0; any other failure is printed with
// its rank and aborts the whole job, so that no rank waits forever for a peer that has gone.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/base/check.h"
#include "core/base/version.h"
#include "launch/commands.h"
#include "launch/launch_env.h"
#include "parallel/mpi_communicator.h"
#include "parallel/solo_communicator.h"

namespace {

constexpr const char* kUsage =
    "usage: loom <command> [options]\n"
    "\n"
    "commands:\n"
    "  train      train a GPT (default: the built-in addition demo); under mpirun, in parallel\n"
    "  generate   continue a prompt with a trained model\n"
    "  tokenizer  train a tokenizer; encode text to token ids and back\n"
    "  prepare    tokenize text or JSONL files into a dataset directory for train\n"
    "  ckpt       inspect and verify checkpoints; export to / import from GPT-2 safetensors\n"
    "  plot       draw a run's metrics (loss, tokens/s, MFU) as a PNG with gnuplot\n"
    "  version    print Loom's version and the git commit it was built from (also --version)\n"
    "\n"
    "`loom <command> --help` lists a command's options. Docs: docs/.\n";

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--version" || args[0] == "version") {
    std::printf("%s\n", loom::version_line().c_str());
    return 0;
  }
  const std::string command = args[0];
  args.erase(args.begin());

  std::optional<loom::parallel::MpiSession> mpi;
  std::unique_ptr<loom::parallel::Communicator> world, host;
  int rank = 0;  // the rank that prints user errors: the launcher's until MPI has confirmed it
  try {
    const loom::LaunchEnv env = loom::detect_launch(loom::process_environment());
    rank = env.rank;
    loom::check_can_start(env);
    if (env.init_mpi()) {
      mpi.emplace(&argc, &argv);
      auto mpi_world = loom::parallel::MpiCommunicator::world();
      host = mpi_world->split_by_host("host");
      world = std::move(mpi_world);
    } else {
      world = std::make_unique<loom::parallel::SoloCommunicator>("world");
      host = std::make_unique<loom::parallel::SoloCommunicator>("host");
    }
    loom::LaunchInfo launch = loom::resolve_launch(env, *world, *host);
    rank = world->rank();
    if (command == "train") loom::bind_gpu(launch, *world, *host);
    loom::record_launch(launch);
    if (command == "train") return loom::run_train(args, *world);
    if (command == "generate") return loom::run_generate(args);
    if (command == "tokenizer") return loom::run_tokenizer(args);
    if (command == "prepare") return loom::run_prepare(args);
    if (command == "ckpt") return loom::run_ckpt(args);
    if (command == "plot") return loom::run_plot(args);
    if (rank == 0) {
      std::fprintf(stderr, "loom: error: unknown command '%s': the commands are train, generate, tokenizer, "
                   "prepare, ckpt, plot and version (see loom --help)\n", command.c_str());
    }
    return 2;
  } catch (const loom::UserError& e) {
    if (rank == 0) std::fprintf(stderr, "loom %s: error: %s\n", command.c_str(), e.what());
    return 2;
  } catch (const loom::parallel::CommTimeout& e) {
    // A peer stopped answering: this rank says who and where, then ends the whole job (the
    // silent rank included) rather than wait for it. The other ranks waiting for it (or for a
    // rank that waits for it) time out at about the same moment: a short grace lets them say
    // so too before the abort, so that the lines together point at the rank that went silent.
    std::fprintf(stderr, "loom %s: rank %d gave up waiting: %s; ending the job\n", command.c_str(), rank, e.what());
    std::fflush(stderr);
    if (world && world->size() > 1) {
      const auto grace = std::clamp(world->timeout() / 10, std::chrono::milliseconds(1000), std::chrono::milliseconds(10000));
      std::this_thread::sleep_for(grace);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "loom %s: internal error on rank %d: %s\n", command.c_str(), rank, e.what());
    if (world && world->size() > 1) {
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    return 1;
  }
}
