// The `loom` subcommands. Each returns the process exit code; errors are thrown (UserError for
// the user's mistakes) and turned into one printed sentence by main.
#pragma once

#include <string>
#include <vector>

#include "launch/cli.h"
#include "parallel/communicator.h"

namespace loom {

// `world` holds every process of the job: one when run directly, all of them under mpirun.
int run_train(const std::vector<std::string>& args, parallel::Communicator& world);
int run_generate(const std::vector<std::string>& args);
// `loom eval`: a model scored on loss, multiple-choice and exact-match tasks, in any layout.
int run_eval(const std::vector<std::string>& args, parallel::Communicator& world);
// `loom tokenizer train|encode|decode|info`.
int run_tokenizer(const std::vector<std::string>& args);
// `loom prepare`: text or JSONL -> a dataset directory of token shards.
int run_prepare(const std::vector<std::string>& args);
// `loom ckpt inspect|export|import`: checkpoints, and GPT-2 safetensors files in and out.
int run_ckpt(const std::vector<std::string>& args);
// `loom plot`: a run's metrics JSON lines -> a PNG of loss and throughput (gnuplot).
int run_plot(const std::vector<std::string>& args);

// The options each command accepts, as its --help lists them (tests/launch/help_cli_test.cpp
// checks that every one is listed).
const std::vector<FlagSpec>& train_flags();
const std::vector<FlagSpec>& generate_flags();
const std::vector<FlagSpec>& eval_flags();
const std::vector<FlagSpec>& prepare_flags();
const std::vector<FlagSpec>& tokenizer_train_flags();
const std::vector<FlagSpec>& tokenizer_encode_flags();
const std::vector<FlagSpec>& tokenizer_decode_flags();
const std::vector<FlagSpec>& tokenizer_info_flags();
const std::vector<FlagSpec>& ckpt_inspect_flags();
const std::vector<FlagSpec>& ckpt_export_flags();
const std::vector<FlagSpec>& ckpt_import_flags();
const std::vector<FlagSpec>& plot_flags();

}  // namespace loom
