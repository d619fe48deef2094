// Turning a RunConfig into the objects of a run: the dataset, the model shape, the thread count.
// Shared by `loom train`, `loom generate` and the benchmark.
#pragma once

#include <string>
#include <vector>

#include "core/config.h"
#include "core/gpt.h"
#include "data/addition.h"

namespace loom {

// Reads CONFIG (or the built-in default when `path` is empty), applies the --set overrides,
// derives unset fields from the dataset (vocab_size, seq_len) and validates. UserError on any
// problem.
config::RunConfig resolve_run_config(const std::string& path, const std::vector<std::string>& overrides);

AdditionTask make_task(const config::RunConfig& config);
GPTConfig model_config_of(const config::RunConfig& config);

// Sets OpenMP's and OpenBLAS's thread counts; 0 means every core. Returns the count in use.
int set_thread_count(int threads);

}  // namespace loom
