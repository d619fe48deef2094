// Reading, overriding and validating the run configuration (schema: core/config.proto).
//
// Every problem is a loom::UserError with one sentence naming the input: a parse error carries
// "file:line:column", an override names the field path, a bad value names the field, the value
// and what was expected.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/config.pb.h"

namespace loom {

// Parses protobuf text format. `source_name` (a path, or "<default>") prefixes error messages.
config::RunConfig parse_config_text(const std::string& text, const std::string& source_name);
config::RunConfig load_config_file(const std::string& path);

// Applies one "a.b.c=value" override (the `--set` flag). Scalar fields only; a message field on
// the path is created if absent. Selecting a oneof member (data.addition.digits=4) switches it.
void apply_config_override(config::RunConfig& config, std::string_view assignment);

// The most threads a process may be asked for: more than any host has cores for.
inline constexpr int kMaxThreads = 1024;
// UserError unless `threads` (a flag or field named `what`) is in 0 .. kMaxThreads.
void check_thread_count(const char* what, int threads);

// The most held-out addition problems a config may ask for (data.addition.test_problems).
inline constexpr int kMaxTestProblems = 1000000;

// Checks every value for range and consistency; throws UserError for the first problem found.
void validate_config(const config::RunConfig& config);

// Blocks per (virtual) pipeline stage, pp x virtual_stages of them: parallel.pp_layers, or an
// even split (earlier stages take the remainder).
std::vector<int> pipeline_split(const config::RunConfig& config);

// Protobuf text format of the config, every field set or defaulted written out.
std::string config_to_text(const config::RunConfig& config);

// Where a run's checkpoints go: checkpoint.dir, else <train.out_dir>/checkpoints.
std::string checkpoint_root(const config::RunConfig& config);

// Where rank 0 appends the metrics JSONL: metrics.jsonl, else <train.out_dir>/metrics.jsonl; ""
// means none.
std::string metrics_path(const config::RunConfig& config);

// Where rank 0 writes its TensorBoard event file: the metrics JSONL's directory (<train.out_dir>
// unless metrics.jsonl says otherwise; <train.out_dir> when metrics.jsonl is ""); "" when
// metrics.tensorboard is false.
std::string tensorboard_dir(const config::RunConfig& config);

}  // namespace loom
