// What an earlier run left where a new `loom train` would write, and what the new run does about
// it. Defaults never destroy work (docs/operations.md, "Running again in the same directory"):
//
//   checkpoints of the same model       resumed (the default, --resume auto)
//   checkpoints of another model        refused with the differences (resume() says which)
//   --resume none with checkpoints      refused: only --fresh starts afresh over them
//   metrics but no checkpoint           the metrics file is moved aside (metrics.jsonl.1, .2, ...)
//                                       and the TensorBoard event files into earlier-run-N/ (a
//                                       run of its own in TensorBoard), so that the new run's
//                                       records never mix with the old ones
//   --fresh                             starts afresh: the earlier checkpoints are deleted at the
//                                       new run's first save, its metrics and event files at once
#pragma once

#include <string>
#include <vector>

#include "core/config.h"

namespace loom {

struct EarlierRun {
  std::string checkpoint_root;           // checkpoint.dir, or <train.out_dir>/checkpoints
  std::vector<std::string> checkpoints;  // committed checkpoints there, newest first
  std::string metrics_path;              // the run's metrics file
  bool has_metrics = false;              // it exists and is not empty
  std::string tensorboard_dir;           // where the run's TensorBoard event files go ("": none)
  std::vector<std::string> event_files;  // event files already there
};

EarlierRun find_earlier_run(const config::RunConfig& cfg);

// How `loom train` starts, from --resume and --fresh.
struct StartPlan {
  std::string resume_spec;  // "auto", "none" or a checkpoint directory
  bool fresh = false;       // --fresh: replace the earlier run
  std::string init_from;    // --init-from: a new run from this model's weights ("": none)
};

// UserError for a combination that would lose work or cannot be meant: --fresh with --resume;
// --resume none where checkpoints are (without --fresh); --init-from with --resume, or where
// checkpoints are (without --fresh: the run would otherwise be resumed, and --init-from never
// replaces one silently). `resume_flag` and `init_from` are "" when not given. A run started
// with --init-from is resumed by running it again without the flag.
StartPlan plan_start(const std::string& resume_flag, bool fresh, const EarlierRun& earlier,
                     const std::string& init_from = "");

// Before the metrics files are opened for a run that did not resume (rank 0 only): --fresh
// removes the earlier ones; otherwise the metrics file is renamed to the first free `<path>.N`
// and the event files moved into the first free `<tensorboard_dir>/earlier-run-N/`. Returns the
// sentences to print ("" when there was nothing). UserError when a file cannot be moved.
std::string set_aside_earlier_metrics(const EarlierRun& earlier, bool fresh);

}  // namespace loom
