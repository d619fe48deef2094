#include "launch/fault_injection.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <sstream>
#include <thread>

#include "core/base/check.h"

namespace loom {
namespace {

int parse_number(const std::string& text, const std::string& entry) {
  size_t used = 0;
  int value = -1;
  try {
    value = std::stoi(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || value < 0) {
    fail_user("LOOM_FAULT entry '" + entry + "' has '" + text + "'", "where a non-negative number was expected");
  }
  return value;
}

}  // namespace

FaultPlan::FaultPlan(const std::string& spec, int world_rank) {
  std::stringstream list(spec);
  std::string entry;
  while (std::getline(list, entry, ',')) {
    if (entry.empty()) continue;
    const size_t at = entry.find('@');
    if (at == std::string::npos) {
      fail_user("LOOM_FAULT entry '" + entry + "' is not KIND@STEP[:RANK] (KIND: kill, kill-in-save, fail-save, hang, nan, signal, error)");
    }
    const std::string name = entry.substr(0, at);
    FaultKind kind;
    if (name == "kill") kind = FaultKind::kKill;
    else if (name == "kill-in-save") kind = FaultKind::kKillInSave;
    else if (name == "fail-save") kind = FaultKind::kFailSave;
    else if (name == "hang") kind = FaultKind::kHang;
    else if (name == "nan") kind = FaultKind::kNan;
    else if (name == "signal") kind = FaultKind::kSignal;
    else if (name == "error") kind = FaultKind::kUserError;
    else fail_user("LOOM_FAULT entry '" + entry + "' names the fault '" + name + "'; expected kill, kill-in-save, fail-save, hang, nan, signal or error");
    const std::string rest = entry.substr(at + 1);
    const size_t colon = rest.find(':');
    const int step = parse_number(rest.substr(0, colon), entry);
    if (colon != std::string::npos && parse_number(rest.substr(colon + 1), entry) != world_rank) continue;
    entries_.push_back(Entry{kind, step});
  }
}

FaultPlan FaultPlan::from_environment(int world_rank) {
  const char* spec = std::getenv("LOOM_FAULT");
  return spec ? FaultPlan(spec, world_rank) : FaultPlan();
}

bool FaultPlan::due(FaultKind kind, int step) {
  for (Entry& e : entries_) {
    if (e.kind == kind && e.step == step && !e.fired) {
      e.fired = true;
      return true;
    }
  }
  return false;
}

void kill_this_process() {
  ::kill(::getpid(), SIGKILL);
  std::abort();  // not reached
}

void hang_this_process() {
  while (true) std::this_thread::sleep_for(std::chrono::hours(1));
}

}  // namespace loom
