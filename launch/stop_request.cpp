#include "launch/stop_request.h"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdint>

#include "core/base/check.h"

namespace loom {
namespace {

// Written by the signal handler, read by the training loop (lock-free, so async-signal-safe).
std::atomic<int> g_received{0};
static_assert(std::atomic<int>::is_always_lock_free);

constexpr int kSignals[] = {SIGTERM, SIGUSR1, SIGINT};
struct sigaction g_previous[3];
bool g_installed = false;

StopReason reason_of(int signal_number) {
  switch (signal_number) {
    case SIGTERM: return StopReason::kTerminate;
    case SIGUSR1: return StopReason::kUser1;
    case SIGINT: return StopReason::kInterrupt;
    default: return StopReason::kNone;
  }
}

void on_signal(int signal_number) {
  const int reason = static_cast<int>(reason_of(signal_number));
  const int before = g_received.load();
  // A second SIGINT (Ctrl-C twice): the person at the terminal wants out now. A repeated SIGTERM
  // or SIGUSR1 is not: Slurm may deliver one both directly and through srun, and a checkpoint
  // being written must not be cut short by it.
  if (before != 0 && signal_number == SIGINT) {
    signal(signal_number, SIG_DFL);
    raise(signal_number);
    return;
  }
  if (reason > before) g_received.store(reason);
}

}  // namespace

const char* stop_reason_name(StopReason reason) {
  switch (reason) {
    case StopReason::kNone: return "nothing";
    case StopReason::kTimeBudget: return "the time budget (--time-budget)";
    case StopReason::kInterrupt: return "SIGINT";
    case StopReason::kUser1: return "SIGUSR1";
    case StopReason::kTerminate: return "SIGTERM";
  }
  return "?";
}

SignalStop::SignalStop() {
  LOOM_CHECK(!g_installed, "only one SignalStop may exist at a time");
  g_received.store(0);
  struct sigaction action = {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  for (size_t i = 0; i < std::size(kSignals); ++i) {
    LOOM_CHECK(sigaction(kSignals[i], &action, &g_previous[i]) == 0, "sigaction failed for signal", kSignals[i]);
  }
  g_installed = true;
}

SignalStop::~SignalStop() {
  for (size_t i = 0; i < std::size(kSignals); ++i) sigaction(kSignals[i], &g_previous[i], nullptr);
  g_installed = false;
}

StopReason SignalStop::received() const { return static_cast<StopReason>(g_received.load()); }

StopDecision agree_on_stop(parallel::Communicator& world, StopReason local) {
  // One max-reduction: the reason in the high bits, the inverted rank in the low ones, so that
  // the strongest reason wins and, among the ranks that have it, the lowest rank is named.
  constexpr int32_t kRankBits = 20;
  const int32_t rank_part = (1 << kRankBits) - 1 - world.rank();
  int32_t value = local == StopReason::kNone ? 0 : (static_cast<int32_t>(local) << kRankBits) | rank_part;
  if (world.size() > 1) world.all_reduce(&value, &value, 1, DType::kI32, parallel::ReduceOp::kMax);
  StopDecision decision;
  if (value == 0) return decision;
  decision.reason = static_cast<StopReason>(value >> kRankBits);
  decision.rank = (1 << kRankBits) - 1 - (value & ((1 << kRankBits) - 1));
  return decision;
}

double parse_duration(const std::string& text, const std::string& what) {
  auto bad = [&]() {
    fail_user(what, "is '" + text + "'", "but must be a duration such as 90s, 20m, 3h50m or 2d (a bare number is seconds)");
  };
  if (text.empty()) bad();
  double total = 0;
  size_t i = 0;
  bool any = false;
  while (i < text.size()) {
    size_t j = i;
    while (j < text.size() && (std::isdigit(static_cast<unsigned char>(text[j])) || text[j] == '.')) ++j;
    if (j == i) bad();
    double value = 0;
    try {
      value = std::stod(text.substr(i, j - i));
    } catch (const std::exception&) {
      bad();
    }
    double unit = 1;
    if (j < text.size()) {
      switch (text[j]) {
        case 's': unit = 1; break;
        case 'm': unit = 60; break;
        case 'h': unit = 3600; break;
        case 'd': unit = 86400; break;
        default: bad();
      }
      ++j;
    } else if (any) {
      bad();  // "3h50": a unit is missing
    }
    total += value * unit;
    any = true;
    i = j;
  }
  if (!(total > 0) || !std::isfinite(total)) bad();
  return total;
}

double TimeBudget::remaining_seconds(Clock::time_point now) const {
  return seconds_ - std::chrono::duration<double>(now - start_).count();
}

bool TimeBudget::exhausted(Clock::time_point now) const {
  if (!enabled()) return false;
  return remaining_seconds(now) < 2 * (slowest_step_s_ + last_save_s_);
}

}  // namespace loom
