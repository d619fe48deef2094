// Faults on purpose, for the tests that prove a run survives them: the environment variable
// LOOM_FAULT lists what to do to which rank at which step, e.g.
//
//   LOOM_FAULT="kill@12:1"          world rank 1 kills itself (SIGKILL) as step 12 starts
//   LOOM_FAULT="kill-in-save@10:2"  rank 2 is killed halfway through writing its step-10 shard
//   LOOM_FAULT="fail-save@20:1"     rank 1's write of its step-20 shard fails halfway (a disk error)
//   LOOM_FAULT="hang@5:3"           rank 3 stops answering as step 5 starts (sleeps forever)
//   LOOM_FAULT="nan@7"              step 7's forward sees a NaN weight (every rank, or :RANK)
//   LOOM_FAULT="signal@8:1"         rank 1 receives SIGUSR1 during step 8
//   LOOM_FAULT="error@3:1"          rank 1 alone finds a user error as step 3 starts (a check
//                                   only some ranks reach: the others must not wait for it)
//
// Entries are separated by commas; without ":RANK" an entry applies to every rank. Steps count
// from 1, as the progress lines print them. Each entry fires once per process, so a step that is
// run again (after a rollback) runs clean. Unset, nothing happens; a malformed value is a
// UserError naming it. Documented in docs/operations.md.
#pragma once

#include <string>
#include <vector>

namespace loom {

enum class FaultKind { kKill, kKillInSave, kFailSave, kHang, kNan, kSignal, kUserError };

class FaultPlan {
 public:
  FaultPlan() = default;
  // Parses `spec` (LOOM_FAULT's syntax) keeping the entries for `world_rank`.
  FaultPlan(const std::string& spec, int world_rank);
  static FaultPlan from_environment(int world_rank);

  bool empty() const { return entries_.empty(); }
  // True once if an entry of `kind` is due at `step` (1-based) on this rank.
  bool due(FaultKind kind, int step);

 private:
  struct Entry {
    FaultKind kind;
    int step;
    bool fired = false;
  };
  std::vector<Entry> entries_;
};

// SIGKILL to this process: no handler, no cleanup, as a node failure would do it.
[[noreturn]] void kill_this_process();
// Never returns and never answers a peer (a rank stuck in a driver call or a dead NIC).
[[noreturn]] void hang_this_process();

}  // namespace loom
