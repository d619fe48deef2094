// Watchdog: the deadline and error keeper of a stream-ordered communicator (NCCL).
//
// A stream-ordered communicator returns from each call as soon as the operation is enqueued, so
// no caller is left waiting to notice that a peer never arrived. The watchdog notices instead: it
// holds the operations in flight (how to ask whether each has completed, its deadline = the time
// it was posted + the communicator's timeout, and what to call it in a message), polls them on its
// own thread, and asks the group for errors that belong to no single operation. At the first
// deadline passed or error it records the failure (CommTimeout for a deadline, loom::Error for an
// error), wakes every waiter, then calls the target's abort() once, which must make the group's
// operations return (ncclCommAbort). The first failure wins: later ones are not reported, and
// from then on watch() and check() throw it at once.
//
// The thread sleeps on a condition variable while nothing is pending, and wakes once per poll
// interval while something is (at once when someone waits). It calls nothing but the target and
// the completions: never MPI, never the caller's code. It knows nothing of CUDA: the NCCL
// communicator supplies completions that query CUDA events and a target that queries and aborts
// its ncclComm_t; tests/parallel/watchdog_test.cpp supplies fakes.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace loom::parallel {

// Whether one watched operation has finished. poll() runs on the watchdog's thread only, must not
// block or throw, and is not called again once it answered kDone or kFailed.
class Completion {
 public:
  enum class State : uint8_t { kPending, kDone, kFailed };
  struct Status {
    State state = State::kPending;
    std::string error;  // why, for kFailed
  };
  virtual ~Completion() = default;
  virtual Status poll() = 0;
};

// The group being watched (its communicator). async_error() and abort() may be called from
// different threads (abort() also from the thread of Watchdog::fail()); the target serialises
// them with its own calls. None of them may throw.
class WatchdogTarget {
 public:
  virtual ~WatchdogTarget() = default;
  // First thing on the watchdog's thread (the NCCL communicator binds it to its device).
  virtual void enter_thread() {}
  // The group's error that belongs to no single operation, "" while there is none. Polled while
  // operations are pending; must not block for long.
  virtual std::string async_error() = 0;
  // Makes every operation in flight return, their results garbage. Called at most once.
  virtual void abort() = 0;
};

// Who the messages name: "NCCL group 'tp' (rank 1 of 4, world rank 5 on host h, device 0)".
struct WatchedGroup {
  std::string kind;  // "NCCL"
  std::string name;  // "tp"
  int rank = 0;
  int size = 1;
  int world_rank = 0;
  std::string host;
  std::string place;  // where else, e.g. "device 0"; may be empty
  std::string describe() const;
};

struct WatchedOperation {
  std::string what;       // the operation and its payload: "all_reduce of 10 f32 elements"
  uint64_t sequence = 0;  // its number in the group's order, the same on every rank
  std::string suspects;   // who may not have arrived, for a timeout: "world rank 3 did not ..."
  std::chrono::milliseconds timeout{0};
};

class Watchdog {
 public:
  struct Options {
    // How often pending operations are polled; also the resolution of their deadlines.
    std::chrono::microseconds poll_interval{1000};
  };

  // Starts the thread. `target` must outlive the watchdog.
  Watchdog(WatchedGroup group, WatchdogTarget& target, Options options);
  // Stops and joins the thread without waiting for pending operations (the caller waits first if
  // it must: wait_all()). Returns as soon as the thread is out of a poll or of the target's
  // abort().
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  const WatchedGroup& group() const { return group_; }

  // Watches `completion` from now until it completes, fails or passes now + operation.timeout.
  // After a failure it throws that failure instead (the operation is not watched).
  void watch(WatchedOperation operation, std::unique_ptr<Completion> completion);
  // Throws the failure, if there is one, as the refusal of a new operation `op`:
  // "<op> on <group> refused: the communicator was aborted by an earlier error: <failure>".
  void check(const std::string& op) const;
  // Throws the failure as it was recorded, if there is one.
  void rethrow_failure() const;
  // A failure found outside the watchdog's thread (an enqueue that failed or never finished):
  // recorded unless another came first, the target aborted once; throws the first failure.
  [[noreturn]] void fail(bool timeout, const std::string& message);
  // Blocks until every operation watched before the call has completed (each deadline bounds the
  // wait: the watchdog fails the group at it), then throws the failure if there is one.
  void wait_all();

  size_t pending() const;
  bool failed() const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Item {
    WatchedOperation operation;
    std::unique_ptr<Completion> completion;
    Clock::time_point deadline;
    uint64_t ticket = 0;  // order of watch() calls
    bool done = false;    // written by the thread only, outside the lock
    std::string error;    // the completion's, when it failed
  };
  struct Failure {
    bool timeout = false;
    std::string message;
  };

  void run();
  // Polls `items` (a snapshot of pending_) without the lock; returns the group's async error.
  std::string poll(const std::deque<Item*>& items);
  // Under the lock: drops the completed items and returns the first failure among them, if any.
  std::optional<Failure> settle(const std::deque<Item*>& items, const std::string& async_error);
  // Records `failure` unless one came first; true if it was the first (the caller then aborts).
  bool record(Failure failure);
  [[noreturn]] static void throw_failure(const Failure& failure);

  const WatchedGroup group_;
  WatchdogTarget& target_;
  const Options options_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;     // the thread: something pending, someone waits, or stop
  std::condition_variable settled_;  // waiters: operations completed, or the group failed
  std::deque<std::unique_ptr<Item>> pending_;  // in watch() order; only the thread removes
  uint64_t next_ticket_ = 0;
  std::optional<Failure> failure_;
  bool poll_now_ = false;
  bool stopping_ = false;
  std::thread thread_;  // last: started once everything above exists
};

}  // namespace loom::parallel
