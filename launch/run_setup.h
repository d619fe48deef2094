// Turning a RunConfig into the objects of a run: the dataset, the model shape, the thread count.
// Shared by `loom train`, `loom generate` and the benchmark.
#pragma once

#include <string>
#include <vector>

#include "core/config.h"
#include "launch/launch_env.h"
#include "launch/run_shape.h"

namespace loom {

// Reads CONFIG (or the built-in default when `path` is empty), applies the --set overrides,
// validates and derives unset fields from the dataset (vocab_size, seq_len: fit_model_to_data).
// UserError on any problem.
config::RunConfig resolve_run_config(const std::string& path, const std::vector<std::string>& overrides);

// Sets OpenMP's and OpenBLAS's thread counts and returns the count in use. 0 means this process's
// share of its host's cores (LaunchInfo::cpu_share: the cores it may run on, each divided among the
// ranks of the host that may run on it too; at least 1), so that the ranks of a host do not
// oversubscribe its cores: every core for a process on its own.
int set_thread_count(int threads, const LaunchInfo& launch);
// The same for the launch launch/main.cpp recorded (current_launch()).
int set_thread_count(int threads);

}  // namespace loom
