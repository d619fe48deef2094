// `loom eval`: a trained or imported model scored on tasks (docs/evaluation.md): a dataset's
// loss and perplexity, multiple-choice files by log-likelihood, exact match of greedy answers,
// the built-in addition task. Under mpirun in any layout (--config, --set parallel.*): every rank
// reads the whole model and keeps its shard of the layout for the log-likelihood tasks, and its
// whole copy for the generative ones, which all ranks share out. Results as a table on stdout
// and, with --json, as one JSON object written to a temporary file renamed into place.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "launch/cli.h"
#include "launch/commands.h"
#include "launch/eval_runner.h"
#include "launch/metrics.h"
#include "launch/model_source.h"
#include "launch/run_setup.h"
#include "launch/run_shape.h"
#include "launch/token_run.h"
#include "parallel/process_grid.h"
#include "parallel/solo_communicator.h"

namespace loom {

const std::vector<FlagSpec>& eval_flags() {
  static const std::vector<FlagSpec> flags = {
      {"loss", "DIR[:SPLIT]", "mean loss and perplexity of a dataset directory's split (default val)", true},
      {"multiple-choice", "FILE.jsonl",
       "accuracy and length-normalised accuracy on {\"context\", \"choices\", \"gold\"} lines", true},
      {"exact-match", "FILE.jsonl", "exact match of greedy answers to {\"prompt\", \"answer\"} lines", true},
      {"addition", "DIGITS", "exact match on the built-in addition task's held-out problems"},
      {"limit", "N", "evaluate the first N documents (sequences, problems) of each task; 0 = all (default 0)"},
      {"delimiter", "TEXT", "multiple choice: what joins the context and each choice (default one space)"},
      {"tokenizer", "PATH", "the model's tokenizer (default: the one its config names, or next to the model)"},
      {"config", "RUN.pbtxt", "the parallel layout (its parallel section) for a run under mpirun"},
      {"set", "FIELD=VALUE", "override a field of that config, e.g. --set parallel.tp=2", true},
      {"batch-size", "N", "sequences per forward pass (default 8)"},
      {"json", "OUT.json", "also write the results as JSON (written whole or not at all)"},
      {"threads", "N", "CPU threads; 0 = this process's share of the cores (default 0)"},
      {"help", "", "show this help"},
  };
  return flags;
}

namespace {

// The layout: --config's parallel section (or one process's) with the --set overrides; dp, when
// neither sets it, takes the processes tp x pp leave.
config::RunConfig layout_config(const ParsedArgs& a, const config::RunConfig& model_config, int world_size) {
  config::RunConfig cfg;
  if (a.has("config")) *cfg.mutable_parallel() = load_config_file(a.get("config", "")).parallel();
  *cfg.mutable_model() = model_config.model();
  if (a.has("set")) {
    for (const std::string& o : a.flags.at("set")) apply_config_override(cfg, o);
  }
  config::ParallelConfig& p = *cfg.mutable_parallel();
  if (p.tp() <= 0 || p.pp() <= 0 || p.dp() <= 0 || p.virtual_stages() <= 0) {
    fail_user("parallel.tp, pp, dp and virtual_stages must be positive");
  }
  if (p.virtual_stages() > 1 && p.pp() == 1) fail_user("parallel.virtual_stages > 1 needs parallel.pp > 1");
  if (!p.has_dp() && world_size % (p.tp() * p.pp()) == 0) p.set_dp(world_size / (p.tp() * p.pp()));
  if (p.tp() * p.pp() * p.dp() != world_size) {
    fail_user("the layout parallel.tp x pp x dp =", p.tp(), "x", p.pp(), "x", p.dp(), "needs", p.tp() * p.pp() * p.dp(),
              "processes but the job has", world_size);
  }
  return cfg;
}

// The tokenizer for text tasks: --tokenizer, that of the model's token shards, one next to the
// model; the addition task's alphabet for a model trained on it. Null when there is none.
std::unique_ptr<TextCodec> codec_of(const ParsedArgs& a, const LoadedModel& loaded) {
  const config::RunConfig& cfg = loaded.config;
  std::string path = a.get("tokenizer", "");
  if (path.empty() && cfg.data().has_tokens()) path = tokenizer_path_of(cfg.data().tokens());
  if (path.empty()) path = tokenizer_dir_of(loaded);
  if (path.empty()) {
    // A Hugging Face directory's config is the demo's with its model section: its vocabulary
    // tells it from an addition model.
    if (!cfg.data().has_addition() || loaded.model->config().vocab_size != AdditionTask::kVocabSize) return nullptr;
    return std::make_unique<TextCodec>(addition_codec(make_task(cfg)));
  }
  std::shared_ptr<const Tokenizer> tokenizer = load_tokenizer(path);
  if (tokenizer->vocab_size() > loaded.model->config().vocab_size) {
    fail_user("the tokenizer", path, "has", tokenizer->vocab_size(), "tokens but the model", loaded.source, "only",
              loaded.model->config().vocab_size, "; pass the tokenizer it was trained with (--tokenizer)");
  }
  return std::make_unique<TextCodec>(tokenizer_codec(tokenizer, path));
}

std::string format_value(const std::string& key, double v) {
  char buf[64];
  if (key == "tokens") {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.4f", v);
  }
  return buf;
}

// One line per metric: task, source, size, metric, value and its standard error where it has one.
void print_table(const std::vector<TaskReport>& reports) {
  std::printf("%-16s %-32s %8s  %-12s %12s %10s\n", "task", "source", "size", "metric", "value", "stderr");
  for (const TaskReport& r : reports) {
    bool first = true;
    for (size_t i = 0; i < r.values.size(); ++i) {
      const std::string& key = r.values[i].first;
      if (key.size() > 7 && key.compare(key.size() - 7, 7, "_stderr") == 0) continue;
      std::string error;
      if (i + 1 < r.values.size() && r.values[i + 1].first == key + "_stderr") {
        error = format_value(key, r.values[i + 1].second);
      }
      std::printf("%-16s %-32s %8s  %-12s %12s %10s\n", first ? r.kind.c_str() : "", first ? r.source.c_str() : "",
                  first ? std::to_string(r.size).c_str() : "", key.c_str(), format_value(key, r.values[i].second).c_str(),
                  error.c_str());
      first = false;
    }
  }
}

std::string results_json(const LoadedModel& loaded, const std::vector<TaskReport>& reports) {
  std::string out = "{\"model\": " + json_quote(loaded.source) + ", \"step\": " + std::to_string(loaded.step) +
                    ", \"tasks\": [";
  for (size_t t = 0; t < reports.size(); ++t) {
    const TaskReport& r = reports[t];
    out += std::string(t ? ", " : "") + "{\"task\": " + json_quote(r.kind) + ", \"source\": " + json_quote(r.source) +
           ", \"name\": " + json_quote(r.name) + ", \"size\": " + std::to_string(r.size);
    for (const auto& [key, value] : r.values) out += ", " + json_quote(key) + ": " + json_number(value);
    out += "}";
  }
  return out + "]}\n";
}

// `text` into `path` through a temporary file in its directory, renamed over it: a reader sees
// the whole file or none.
void write_file_atomically(const std::string& path, const std::string& text) {
  const std::string partial = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(partial, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) {
      std::error_code ec;
      std::filesystem::remove(partial, ec);
      fail_user("cannot write", path, "(" + std::string(std::strerror(errno)) + ")");
    }
  }
  std::error_code ec;
  std::filesystem::rename(partial, path, ec);
  if (ec) {
    std::filesystem::remove(partial, ec);
    fail_user("cannot write", path + ":", ec.message());
  }
}

// What the flags of `loom eval` ask for besides the tasks, checked.
struct EvalOptions {
  std::string model_path;
  int limit = 0;
  int batch_rows = 8;
  std::string delimiter = " ";
  std::string json_path;  // "" without --json
};

EvalOptions eval_options_of(const ParsedArgs& a) {
  if (a.positionals.size() != 1) {
    fail_user("loom eval takes one MODEL (a model file, checkpoint or run directory), got", a.positionals.size(),
              "(see loom eval --help)");
  }
  EvalOptions o;
  o.model_path = a.positionals[0];
  o.limit = a.get_int("limit", 0);
  o.batch_rows = a.get_int("batch-size", 8);
  if (o.limit < 0) fail_user("--limit is", o.limit, "but must be >= 0 (0: every document)");
  if (o.batch_rows <= 0) fail_user("--batch-size is", o.batch_rows, "but must be positive");
  o.delimiter = a.get("delimiter", " ");
  o.json_path = a.get("json", "");
  if (a.has("json") && o.json_path.empty()) fail_user("--json needs a file name");
  if (!o.json_path.empty()) {
    // Found now, not after the evaluation: a run that cannot write its results does not start.
    const std::filesystem::path parent = std::filesystem::path(o.json_path).parent_path();
    if (!parent.empty() && !std::filesystem::is_directory(parent)) {
      fail_user("--json", o.json_path + ": the directory", parent.string(), "does not exist");
    }
  }
  if (!a.has("loss") && !a.has("multiple-choice") && !a.has("exact-match") && !a.has("addition")) {
    fail_user("loom eval needs a task: --loss, --multiple-choice, --exact-match or --addition (see loom eval --help)");
  }
  return o;
}

// The file tasks of the flags, in the order loss, multiple choice, exact match: read and checked
// before the model loads, so that a bad line costs no model load.
std::vector<EvalTask> file_tasks_of(const ParsedArgs& a, const EvalOptions& o) {
  std::vector<EvalTask> tasks;
  auto add = [&](const char* flag, EvalTask::Kind kind) {
    if (!a.has(flag)) return;
    for (const std::string& source : a.flags.at(flag)) tasks.push_back(load_eval_task(kind, source, o.limit, o.delimiter));
  };
  add("loss", EvalTask::Kind::kLoss);
  add("multiple-choice", EvalTask::Kind::kMultipleChoice);
  add("exact-match", EvalTask::Kind::kExactMatch);
  return tasks;
}

// --addition's task: the held-out problems the model's run config draws.
EvalTask addition_task_of(const ParsedArgs& a, const EvalOptions& o, const config::RunConfig& config) {
  const int test_problems = config.data().has_addition() ? config.data().addition().test_problems() : 1000;
  return load_eval_task(EvalTask::Kind::kAddition, a.get("addition", ""), o.limit, o.delimiter, config.train().seed(),
                        test_problems);
}

// This rank's part of the layout: the model as loaded when one process holds all of it, else its
// shards of the layout, copied from the whole model.
struct EvalLayout {
  std::unique_ptr<parallel::ProcessGrid> grid;
  std::vector<std::unique_ptr<GPT>> shards;
  std::vector<GPT*> chunks;
  parallel::SoloCommunicator one_replica{"dp"};
  parallel::Communicator* dp = &one_replica;
};

void build_layout(EvalLayout& out, parallel::Communicator& world, const config::RunConfig& layout, GPT& whole) {
  const config::ParallelConfig& pc = layout.parallel();
  if (world.size() == 1 && pc.virtual_stages() == 1) {
    out.chunks.push_back(&whole);
    return;
  }
  out.grid = std::make_unique<parallel::ProcessGrid>(world, parallel::GridShape{pc.tp(), pc.pp(), pc.dp()});
  const std::vector<int> split = pipeline_split(layout);
  for (int c = 0; c < pc.virtual_stages(); ++c) {
    ModelParallel parallel = model_parallel_for(*out.grid, split, pc.sequence_parallel(), c, pc.virtual_stages());
    parallel.gradients = false;
    out.shards.push_back(std::make_unique<GPT>(whole.config(), parallel));
    copy_shard_from_whole(whole, *out.shards.back());
    out.chunks.push_back(out.shards.back().get());
  }
  out.dp = &out.grid->dp();
}

}  // namespace

int run_eval(const std::vector<std::string>& args, parallel::Communicator& world) {
  const ParsedArgs a = parse_args("eval", args, eval_flags());
  if (a.has("help")) {
    if (world.rank() == 0) {
      std::cout << usage_text(
          "loom eval MODEL --loss DIR[:SPLIT] | --multiple-choice FILE | --exact-match FILE | --addition DIGITS "
          "[options]\n"
          "       mpirun -np N loom eval MODEL --set parallel.tp=2 ... (or --config RUN.pbtxt)",
          "Scores a model on tasks and prints a table (and JSON with --json). MODEL: a model file, a checkpoint,\n"
          "a run directory or a Hugging Face model directory. Task files and metrics: docs/evaluation.md.",
          eval_flags());
    }
    return 0;
  }
  const EvalOptions options = eval_options_of(a);
  const int threads = a.get_int("threads", 0);
  check_thread_count("--threads", threads);
  set_thread_count(threads);
  std::vector<EvalTask> tasks = file_tasks_of(a, options);
  LoadedModel loaded = load_trained_model(options.model_path);
  if (a.has("addition")) tasks.push_back(addition_task_of(a, options, loaded.config));
  std::unique_ptr<TextCodec> codec;
  for (const EvalTask& t : tasks) {
    if (t.kind != EvalTask::Kind::kMultipleChoice && t.kind != EvalTask::Kind::kExactMatch) continue;
    codec = codec_of(a, loaded);
    if (!codec) {
      fail_user("no tokenizer is found for the model", options.model_path,
                "(its run config names none, and none lies next to it); pass --tokenizer PATH");
    }
    break;
  }
  const config::RunConfig layout = layout_config(a, loaded.config, world.size());
  const config::ParallelConfig& pc = layout.parallel();
  if (pc.sequence_parallel() &&
      (static_cast<int64_t>(options.batch_rows) * loaded.model->config().max_seq_len) % pc.tp() != 0) {
    fail_user("with parallel.sequence_parallel, --batch-size", options.batch_rows, "x the model's",
              loaded.model->config().max_seq_len, "positions must be a multiple of parallel.tp =", pc.tp());
  }
  EvalLayout parts;
  build_layout(parts, world, layout, *loaded.model);

  EvalModels models;
  // Sequence parallelism splits a pass's B x T tokens over the tensor-parallel ranks: one shape,
  // checked above to divide.
  models.layout = LayoutModel{parts.chunks, parts.dp, options.batch_rows, pc.sequence_parallel()};
  models.whole = loaded.model.get();
  models.decoders = &world;
  models.codec = codec.get();
  std::vector<TaskReport> reports;
  for (const EvalTask& t : tasks) reports.push_back(run_eval_task(t, models));

  if (world.rank() == 0) {
    std::printf("model %s%s | layout tp=%d pp=%d dp=%d\n", loaded.source.c_str(),
                loaded.step >= 0 ? (" (step " + std::to_string(loaded.step) + ")").c_str() : "", pc.tp(), pc.pp(),
                pc.dp());
    print_table(reports);
    if (!options.json_path.empty()) {
      write_file_atomically(options.json_path, results_json(loaded, reports));
      std::printf("wrote %s\n", options.json_path.c_str());
    }
  }
  return 0;
}

}  // namespace loom
