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
#include "launch/cuda_plugin.h"
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
    "  eval       score a model: loss, multiple-choice and exact-match tasks; under mpirun, in parallel\n"
    "  tokenizer  train a tokenizer; encode text to token ids and back\n"
    "  prepare    tokenize text or JSONL files into a dataset directory for train\n"
    "  ckpt       inspect and verify checkpoints; export to / import from GPT-2 safetensors\n"
    "  plot       draw a run's metrics (loss, tokens/s, MFU) as a PNG with gnuplot\n"
    "  version    print Loom's version, the git commit it was built from and whether it has CUDA\n"
    "             (also --version)\n"
    "\n"
    "`loom <command> --help` lists a command's options. Docs: docs/.\n";

// How long a rank with a user error waits for the others to report theirs before it decides
// that it alone found it (a check only some ranks reach) and ends the job.
constexpr std::chrono::seconds kErrorAgreement{10};

// A user error on this rank of a job of several processes. Usually every rank checks the same
// input and fails alike: they meet in a barrier on `errors` (a communicator used for nothing
// else, so that a rank still inside a training collective cannot be confused by it), rank 0
// prints the sentence once and all exit 2. A rank whose peers do not arrive within
// kErrorAgreement found it alone: it prints the sentence (naming itself) and ends the job with
// exit code 2, rather than leave the others waiting for it until their deadline.
int end_on_user_error(const std::string& command, const std::string& message, int rank,
                      loom::parallel::Communicator* errors) {
  if (errors == nullptr || errors->size() == 1) {
    // One process, or an error while the launch itself was being agreed on (raised by every rank).
    if (rank == 0) std::fprintf(stderr, "loom %s: error: %s\n", command.c_str(), message.c_str());
    return 2;
  }
  bool everyone = true;
  try {
    errors->barrier();
  } catch (const loom::Error&) {
    everyone = false;
  }
  if (everyone) {
    if (rank == 0) std::fprintf(stderr, "loom %s: error: %s\n", command.c_str(), message.c_str());
    return 2;
  }
  std::fprintf(stderr, "loom %s: error: %s%s\n", command.c_str(),
               rank == 0 ? "" : ("rank " + std::to_string(rank) + ": ").c_str(), message.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 2);
  return 2;
}

// An internal error (a bug) in words a user can report: no source location (LOOM_DEBUG=1 adds
// it) and no rank in a one-process run.
void print_internal_error(const std::string& command, const std::exception& e, int rank, int world_size) {
  std::string where;
  const auto* error = dynamic_cast<const loom::Error*>(&e);
  const char* debug = std::getenv("LOOM_DEBUG");
  if (error != nullptr && !error->location().empty() && debug != nullptr && std::string(debug) == "1") {
    where = " [" + error->location() + "]";
  }
  const std::string on_rank = world_size > 1 ? " on rank " + std::to_string(rank) : "";
  std::fprintf(stderr, "loom %s: internal error%s (a bug in Loom; please report this line): %s%s\n", command.c_str(),
               on_rank.c_str(), e.what(), where.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--version" || args[0] == "version") {
    std::printf("%s\n%s\n", loom::version_line().c_str(), loom::cuda_build_line().c_str());
    return 0;
  }
  const std::string command = args[0];
  args.erase(args.begin());

  std::optional<loom::parallel::MpiSession> mpi;
  std::unique_ptr<loom::parallel::Communicator> world, host, errors;
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
      errors = loom::parallel::MpiCommunicator::world();
      errors->set_timeout(kErrorAgreement);
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
    if (command == "eval") return loom::run_eval(args, *world);
    if (command == "tokenizer") return loom::run_tokenizer(args);
    if (command == "prepare") return loom::run_prepare(args);
    if (command == "ckpt") return loom::run_ckpt(args);
    if (command == "plot") return loom::run_plot(args);
    if (rank == 0) {
      std::fprintf(stderr, "loom: error: unknown command '%s': the commands are train, generate, eval, "
                   "tokenizer, prepare, ckpt, plot and version (see loom --help)\n", command.c_str());
    }
    return 2;
  } catch (const loom::UserError& e) {
    return end_on_user_error(command, e.what(), rank, errors.get());
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
    print_internal_error(command, e, rank, world ? world->size() : 1);
    if (world && world->size() > 1) {
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    return 1;
  }
}
