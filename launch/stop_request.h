// Stopping a run early without losing it: SIGTERM, SIGUSR1 or SIGINT (what Slurm sends before a
// time limit or on preemption, what mpirun forwards, what Ctrl-C sends) and the time budget
// (`loom train --time-budget 3h50m`).
//
// A signal only sets a flag. At the end of every step all ranks agree (agree_on_stop): if any
// rank has a reason to stop, every rank finishes that same step, the run saves a checkpoint and
// exits with kExitResumable, which a batch script turns into `scontrol requeue`; the next job
// continues with `--resume auto`. A second SIGINT while stopping ends the process at once (the
// default action), for the person at the terminal who really means it; repeated SIGTERMs and
// SIGUSR1s change nothing.
#pragma once

#include <algorithm>
#include <chrono>
#include <string>

#include "parallel/communicator.h"

namespace loom {

// "Stopped early, state saved: run me again with --resume auto" (EX_TEMPFAIL of sysexits.h).
constexpr int kExitResumable = 75;

// Ordered: when ranks disagree, the highest reason wins.
enum class StopReason : int {
  kNone = 0,
  kTimeBudget = 1,
  kInterrupt = 2,  // SIGINT
  kUser1 = 3,      // SIGUSR1
  kTerminate = 4,  // SIGTERM
};

// "SIGUSR1", "the time budget", ...
const char* stop_reason_name(StopReason reason);

// Installs the handlers for the lifetime of the object (one at a time per process: signal
// dispositions are process-wide, so this is the one piece of global state, and it is only a flag).
// The previous dispositions come back on destruction.
class SignalStop {
 public:
  SignalStop();
  ~SignalStop();
  SignalStop(const SignalStop&) = delete;
  SignalStop& operator=(const SignalStop&) = delete;
  // The strongest signal received so far (kNone if none).
  StopReason received() const;
};

// The result of the agreement: why, and the lowest world rank that had that reason.
struct StopDecision {
  StopReason reason = StopReason::kNone;
  int rank = 0;
  bool stop() const { return reason != StopReason::kNone; }
};

// Collective over `world`: every rank passes its own reason and gets the same decision.
StopDecision agree_on_stop(parallel::Communicator& world, StopReason local);

// Parses a duration: "90", "90s", "20m", "3h50m", "1h30m15s", "2d"; UserError naming `what`
// otherwise. Returns seconds (> 0).
double parse_duration(const std::string& text, const std::string& what);

// The time budget of one process's run: stop when the next step plus a checkpoint would no
// longer fit. The estimate uses the slowest step seen and the last checkpoint's duration, both
// doubled as a safety margin.
class TimeBudget {
 public:
  using Clock = std::chrono::steady_clock;
  TimeBudget() = default;  // no budget
  TimeBudget(double seconds, Clock::time_point start) : seconds_(seconds), start_(start) {}
  bool enabled() const { return seconds_ > 0; }
  void record_step(double seconds) { slowest_step_s_ = std::max(slowest_step_s_, seconds); }
  void record_save(double seconds) { last_save_s_ = seconds; }
  // True when the remaining time is less than 2 x (slowest step + last save).
  bool exhausted(Clock::time_point now) const;
  double remaining_seconds(Clock::time_point now) const;

 private:
  double seconds_ = 0;
  Clock::time_point start_{};
  double slowest_step_s_ = 0;
  double last_save_s_ = 0;
};

}  // namespace loom
