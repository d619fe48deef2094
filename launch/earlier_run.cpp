#include "launch/earlier_run.h"

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
  return e;
}

StartPlan plan_start(const std::string& resume_flag, bool fresh, const EarlierRun& earlier) {
  if (fresh && !resume_flag.empty()) {
    fail_user("--fresh starts a new run and --resume", resume_flag, "continues one: pass one of them, not both");
  }
  StartPlan plan{resume_flag.empty() ? "auto" : resume_flag, fresh};
  if (fresh) plan.resume_spec = "none";
  if (plan.resume_spec == "none" && !fresh && !earlier.checkpoints.empty()) {
    fail_user("--resume none, but", earlier.checkpoint_root, "holds", earlier.checkpoints.size(),
              earlier.checkpoints.size() == 1 ? "checkpoint" : "checkpoints", "of an earlier run (newest",
              earlier.checkpoints[0] + "): resume it (the default), pass --fresh to start afresh and delete them at "
              "this run's first save, or choose another train.out_dir");
  }
  return plan;
}

std::string set_aside_earlier_metrics(const EarlierRun& earlier, bool fresh) {
  if (!earlier.has_metrics) return "";
  std::error_code ec;
  if (fresh) {
    fs::remove(earlier.metrics_path, ec);
    if (ec) fail_user("--fresh: cannot remove the earlier run's metrics file", earlier.metrics_path + ":", ec.message());
    return str_cat("--fresh: removed the earlier run's metrics file", earlier.metrics_path);
  }
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
  return str_cat("note:", earlier.metrics_path, "held the metrics of an earlier run with no checkpoint to resume;"
                 " moved to", aside, "so that this run's records start anew");
}

}  // namespace loom
