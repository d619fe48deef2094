#include "launch/earlier_run.h"

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "checkpoints/checkpoint.h"
#include "core/base/check.h"

namespace loom {

namespace fs = std::filesystem;

EarlierRun find_earlier_run(const config::RunConfig& cfg) {
  EarlierRun e;
  e.checkpoint_root = checkpoint_root(cfg);
  e.checkpoints = checkpoint::list_checkpoints(e.checkpoint_root);
  e.metrics_path = metrics_path(cfg);
  std::error_code ec;
  const auto size = fs::file_size(e.metrics_path, ec);
  e.has_metrics = !ec && size > 0;
  // Where event files go even when this run writes none: an earlier run may have.
  config::RunConfig with_events = cfg;
  with_events.mutable_metrics()->set_tensorboard(true);
  e.tensorboard_dir = tensorboard_dir(with_events);
  for (const auto& entry : fs::directory_iterator(e.tensorboard_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && name.rfind("events.out.tfevents.", 0) == 0) e.event_files.push_back(entry.path().string());
  }
  std::sort(e.event_files.begin(), e.event_files.end());
  return e;
}

StartPlan plan_start(const std::string& resume_flag, bool fresh, const EarlierRun& earlier,
                     const std::string& init_from) {
  if (fresh && !resume_flag.empty()) {
    fail_user("--fresh starts a new run and --resume", resume_flag, "continues one: pass one of them, not both");
  }
  if (!init_from.empty() && !resume_flag.empty()) {
    fail_user("--init-from starts a new run from", init_from, "and --resume", resume_flag,
              "continues one: pass one of them, not both");
  }
  if (!init_from.empty() && !fresh && !earlier.checkpoints.empty()) {
    fail_user("--init-from starts a new run, but", earlier.checkpoint_root, "holds", earlier.checkpoints.size(),
              earlier.checkpoints.size() == 1 ? "checkpoint" : "checkpoints", "of an earlier run (newest",
              earlier.checkpoints[0] + "): run again without --init-from to resume it, add --fresh to start over from",
              init_from, "(the earlier checkpoints are deleted at this run's first save), or choose another train.out_dir");
  }
  StartPlan plan{resume_flag.empty() ? "auto" : resume_flag, fresh, init_from};
  if (fresh || !init_from.empty()) plan.resume_spec = "none";
  if (plan.resume_spec == "none" && !fresh && init_from.empty() && !earlier.checkpoints.empty()) {
    fail_user("--resume none, but", earlier.checkpoint_root, "holds", earlier.checkpoints.size(),
              earlier.checkpoints.size() == 1 ? "checkpoint" : "checkpoints", "of an earlier run (newest",
              earlier.checkpoints[0] + "): resume it (the default), pass --fresh to start afresh and delete them at "
              "this run's first save, or choose another train.out_dir");
  }
  return plan;
}

std::string set_aside_earlier_metrics(const EarlierRun& earlier, bool fresh) {
  std::string said;
  auto say = [&](const std::string& sentence) { said += (said.empty() ? "" : "\n") + sentence; };
  std::error_code ec;
  if (fresh) {
    if (earlier.has_metrics) {
      fs::remove(earlier.metrics_path, ec);
      if (ec) fail_user("--fresh: cannot remove the earlier run's metrics file", earlier.metrics_path + ":", ec.message());
      say(str_cat("--fresh: removed the earlier run's metrics file", earlier.metrics_path));
    }
    for (const std::string& f : earlier.event_files) {
      fs::remove(f, ec);
      if (ec) fail_user("--fresh: cannot remove the earlier run's TensorBoard event file", f + ":", ec.message());
    }
    if (!earlier.event_files.empty()) {
      say(str_cat("--fresh: removed the earlier run's", earlier.event_files.size(), "TensorBoard event file(s) in",
                  earlier.tensorboard_dir));
    }
    return said;
  }
  if (earlier.has_metrics) {
    std::string aside;
    for (int n = 1;; ++n) {
      aside = earlier.metrics_path + "." + std::to_string(n);
      if (!fs::exists(aside, ec)) break;
    }
    fs::rename(earlier.metrics_path, aside, ec);
    if (ec) {
      fail_user("cannot move the earlier run's metrics file", earlier.metrics_path, "aside to", aside + ":",
                ec.message(), "(move or remove it, or pass --fresh)");
    }
    say(str_cat("note:", earlier.metrics_path, "held the metrics of an earlier run with no checkpoint to resume;"
                " moved to", aside, "so that this run's records start anew"));
  }
  if (!earlier.event_files.empty()) {
    fs::path aside;
    for (int n = 1;; ++n) {
      aside = fs::path(earlier.tensorboard_dir) / ("earlier-run-" + std::to_string(n));
      if (!fs::exists(aside, ec)) break;
    }
    fs::create_directories(aside, ec);
    for (const std::string& f : earlier.event_files) {
      if (!ec) fs::rename(f, aside / fs::path(f).filename(), ec);
    }
    if (ec) {
      fail_user("cannot move the earlier run's TensorBoard event files into", aside.string() + ":", ec.message(),
                "(move or remove them, or pass --fresh)");
    }
    say(str_cat("note: moved the earlier run's TensorBoard event files into", aside.string(),
                "(TensorBoard shows it as a run of its own)"));
  }
  return said;
}

}  // namespace loom
