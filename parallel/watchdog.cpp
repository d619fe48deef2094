// Watchdog: pending operations, their deadlines and the group's first failure, kept by one thread
// (see watchdog.h).
#include "parallel/watchdog.h"

#include <algorithm>
#include <sstream>
#include <utility>

#include "core/base/check.h"
#include "parallel/communicator.h"

namespace loom::parallel {
namespace {

using Clock = std::chrono::steady_clock;

Clock::time_point deadline_after(Clock::time_point start, std::chrono::milliseconds timeout) {
  // A timeout of years means "never": saturate instead of overflowing the clock.
  if (timeout > std::chrono::hours(24 * 365)) return Clock::time_point::max();
  return start + timeout;
}

std::string operation_label(const WatchedOperation& operation) {
  return operation.what + " (operation #" + std::to_string(operation.sequence) + ")";
}

constexpr const char* kAborted = "; the communicator was aborted";

}  // namespace

std::string WatchedGroup::describe() const {
  std::ostringstream out;
  out << kind << (kind.empty() ? "" : " ") << "group '" << name << "' (rank " << rank << " of "
      << size << ", world rank " << world_rank << " on host " << host << (place.empty() ? "" : ", ")
      << place << ")";
  return out.str();
}

Watchdog::Watchdog(WatchedGroup group, WatchdogTarget& target, Options options)
    : group_(std::move(group)), target_(target), options_(options) {
  LOOM_CHECK(options_.poll_interval.count() > 0, "watchdog of", group_.describe(),
             ": poll interval", options_.poll_interval.count(), "us must be positive");
  thread_ = std::thread([this] { run(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void Watchdog::watch(WatchedOperation operation, std::unique_ptr<Completion> completion) {
  LOOM_CHECK(completion != nullptr, "watchdog of", group_.describe(), ":", operation.what,
             "has no completion to poll");
  auto item = std::make_unique<Item>();
  item->deadline = deadline_after(Clock::now(), operation.timeout);
  item->operation = std::move(operation);
  item->completion = std::move(completion);
  bool was_idle = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (failure_) throw_failure(*failure_);
    item->ticket = next_ticket_++;
    was_idle = pending_.empty();
    pending_.push_back(std::move(item));
  }
  // Only the first pending operation wakes the thread: from then on it polls at its interval.
  if (was_idle) wake_.notify_one();
}

void Watchdog::check(const std::string& op) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!failure_) return;
  Failure refusal = *failure_;
  refusal.message =
      op + " on " + group_.describe() +
      " refused: the communicator was aborted by an earlier error: " + failure_->message;
  throw_failure(refusal);
}

void Watchdog::rethrow_failure() const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (failure_) throw_failure(*failure_);
}

void Watchdog::fail(bool timeout, const std::string& message) {
  if (record(Failure{timeout, message + kAborted})) target_.abort();
  std::unique_lock<std::mutex> lock(mutex_);
  const Failure first = *failure_;  // this one, or one that came before it
  lock.unlock();
  throw_failure(first);
}

void Watchdog::wait_all() {
  std::unique_lock<std::mutex> lock(mutex_);
  const uint64_t posted = next_ticket_;
  if (!pending_.empty() && !failure_) {
    poll_now_ = true;
    wake_.notify_one();
  }
  // pending_ stays in ticket order, so its front is the oldest operation still in flight.
  settled_.wait(lock, [&] {
    return failure_.has_value() || pending_.empty() || pending_.front()->ticket >= posted;
  });
  if (failure_) throw_failure(*failure_);
}

size_t Watchdog::pending() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return pending_.size();
}

bool Watchdog::failed() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return failure_.has_value();
}

bool Watchdog::record(Failure failure) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (failure_) return false;
    failure_ = std::move(failure);
  }
  // Waiters learn of it before the abort, which may take a while.
  settled_.notify_all();
  wake_.notify_all();
  return true;
}

void Watchdog::throw_failure(const Failure& failure) {
  if (failure.timeout) throw CommTimeout(failure.message);
  throw Error(failure.message);
}

void Watchdog::run() {
  target_.enter_thread();
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    if (failure_ && !pending_.empty()) {
      pending_.clear();  // never polled again: the group was aborted
      settled_.notify_all();
    }
    // Asleep until there is something to watch; then one poll interval between rounds, cut short
    // by a waiter.
    wake_.wait(lock, [&] { return stopping_ || (!pending_.empty() && !failure_); });
    if (stopping_) return;
    wake_.wait_for(lock, options_.poll_interval, [&] { return stopping_ || poll_now_; });
    if (stopping_) return;
    poll_now_ = false;
    if (pending_.empty() || failure_) continue;

    std::deque<Item*> items;
    for (const std::unique_ptr<Item>& item : pending_) items.push_back(item.get());
    lock.unlock();
    // Items are removed by this thread only, so the snapshot stays valid without the lock.
    const std::string async_error = poll(items);
    lock.lock();
    std::optional<Failure> failure = settle(items, async_error);
    if (failure) {
      lock.unlock();
      if (record(std::move(*failure))) target_.abort();
      lock.lock();
    }
  }
}

std::string Watchdog::poll(const std::deque<Item*>& items) {
  // The group's error first: an operation that completes after it may hold garbage.
  std::string async_error = target_.async_error();
  for (Item* item : items) {
    const Completion::Status status = item->completion->poll();
    if (status.state == Completion::State::kDone) item->done = true;
    if (status.state == Completion::State::kFailed) {
      item->error = status.error.empty() ? "failed" : status.error;
    }
  }
  return async_error;
}

std::optional<Watchdog::Failure> Watchdog::settle(const std::deque<Item*>& items,
                                                  const std::string& async_error) {
  const Clock::time_point now = Clock::now();
  std::optional<Failure> failure;
  // Checked in order of priority (an operation's own error, the group's error, a deadline) and,
  // within each, oldest first: the first operation that went wrong is usually the cause.
  for (const Item* item : items) {
    if (!item->error.empty()) {
      failure = Failure{false, operation_label(item->operation) + " failed in " +
                                   group_.describe() + ": " + item->error + kAborted};
      break;
    }
  }
  if (!failure && !async_error.empty()) {
    const auto oldest =
        std::find_if(items.begin(), items.end(), [](const Item* item) { return !item->done; });
    const std::string in_flight = oldest == items.end()
                                      ? std::string("with no operation in flight")
                                      : "during " + operation_label((*oldest)->operation);
    failure =
        Failure{false, group_.describe() + " failed " + in_flight + ": " + async_error + kAborted};
  }
  if (!failure) {
    for (const Item* item : items) {
      if (item->done || item->deadline > now) continue;
      failure = Failure{true, operation_label(item->operation) + " in " + group_.describe() +
                                  " did not complete within " +
                                  std::to_string(item->operation.timeout.count()) +
                                  " ms: " + item->operation.suspects + kAborted};
      break;
    }
  }
  const size_t before = pending_.size();
  std::erase_if(pending_, [](const std::unique_ptr<Item>& item) { return item->done; });
  if (pending_.size() != before) settled_.notify_all();
  return failure;
}

}  // namespace loom::parallel
