// `loom train`: its flags, the run they and the config describe, the training loop, and what a
// finished run leaves: the model file and samples on rank 0.
//
// The run is built by build_training_run (launch/training_run.h): the config resolved, the
// process grid, this rank's shard of the model and its AdamW, the data, the checkpoints, the
// metrics. The loop (launch/training_loop.h) steps, reports, evaluates, saves, rolls back and
// stops. The model file and samples use the whole model, assembled from the shards on rank 0
// (core/model/assembly.h).
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "checkpoints/model_file.h"
#include "core/decoder.h"
#include "data/tokenizer.h"
#include "launch/cli.h"
#include "launch/commands.h"
#include "launch/evaluation.h"
#include "launch/run_setup.h"
#include "launch/stop_request.h"
#include "launch/token_run.h"
#include "launch/training_loop.h"
#include "launch/training_run.h"

namespace loom {

const std::vector<FlagSpec>& train_flags() {
  static const std::vector<FlagSpec> flags = {
      {"set", "FIELD=VALUE", "override a config field, e.g. --set train.steps=500", true},
      {"resume", "auto|DIR|none",
       "auto (default) = continue from the newest valid checkpoint under checkpoint.dir, or start "
       "afresh when there is none (refused when they are another model's); DIR = that checkpoint, or "
       "the newest in DIR; none = start afresh, refused where checkpoints are (see --fresh)"},
      {"fresh", "",
       "start a new run even where an earlier run left checkpoints: they are deleted at this run's "
       "first save, and its metrics file at once"},
      {"init-from", "MODEL",
       "start a new run from the weights of MODEL (a model file, a checkpoint or run directory, or a Hugging "
       "Face model directory) with a fresh optimizer and schedule at step 0; its shape must be the config's; "
       "refused where checkpoints would be resumed (run again without it to resume, or add --fresh)"},
      {"stop-after-steps", "N",
       "train at most N steps in this process, save a checkpoint and exit 0 (the run resumes with "
       "--resume auto)"},
      {"time-budget", "DURATION",
       "wall-clock budget of this process, e.g. 3h50m: when the next step and a checkpoint would "
       "not fit, save and exit 75 (like SIGTERM/SIGUSR1; a batch script requeues the job)"},
      {"help", "", "show this help"},
  };
  return flags;
}

namespace {

// The flags of `loom train`, checked before anything else is done.
TrainOptions train_options_of(const ParsedArgs& parsed, std::chrono::steady_clock::time_point started) {
  if (parsed.positionals.size() > 1) fail_user("loom train takes one config file, got", parsed.positionals.size());
  TrainOptions options;
  options.config_path = parsed.positionals.empty() ? "" : parsed.positionals[0];
  if (parsed.flags.count("set")) options.overrides = parsed.flags.at("set");
  if (parsed.has("resume") && parsed.get("resume", "").empty()) {
    fail_user("--resume expects auto, a checkpoint directory, or none");
  }
  options.resume = parsed.get("resume", "");
  options.fresh = parsed.has("fresh");
  if (parsed.has("init-from") && parsed.get("init-from", "").empty()) {
    fail_user("--init-from expects a model: a model file, a checkpoint or run directory, or a Hugging Face model directory");
  }
  options.init_from = parsed.get("init-from", "");
  options.stop_after_steps = parsed.get_int("stop-after-steps", 0);
  if (parsed.has("stop-after-steps") && options.stop_after_steps <= 0) {
    fail_user("--stop-after-steps is", options.stop_after_steps, "but must be a positive number of steps");
  }
  if (parsed.has("time-budget")) {
    options.budget = TimeBudget(parse_duration(parsed.get("time-budget", ""), "--time-budget"), started);
  }
  return options;
}

void print_train_help() {
  std::cout << usage_text(
      "loom train [CONFIG.pbtxt] [--set field=value ...]\n"
      "       mpirun -np N loom train [CONFIG.pbtxt] --set parallel.tp=N ...\n"
      "       srun --mpi=pmix -n N loom train [CONFIG.pbtxt] ...   (Slurm: launch/slurm/*.sbatch)",
      "Trains a GPT on CPU ranks or GPUs (train.device; docs/gpu.md). Without CONFIG, trains the\n"
      "built-in demo (configs/addition.pbtxt): a small GPT learning 3-digit addition; more examples\n"
      "in configs/. Config fields: docs/config.md; parallel layouts: docs/parallelism.md; metrics:\n"
      "docs/metrics.md.\n"
      "\n"
      "SIGTERM, SIGUSR1 or SIGINT on any rank: every rank finishes the same step, saves a\n"
      "checkpoint and exits 75. Exit codes: 0 done, 2 bad input (one sentence says which),\n"
      "75 stopped early with a checkpoint (run again with --resume auto), anything else a\n"
      "failed or killed rank (docs/operations.md).",
      train_flags());
}

// Greedy answers of the first held-out problems, and how to ask the model more.
void print_addition_samples(const GPT& whole, const AdditionTask& task, int samples, const std::string& model_path) {
  const int n_samples = std::min<int>(samples, static_cast<int>(task.test_problems().size()));
  if (n_samples > 0) {
    std::vector<AdditionTask::Problem> shown(task.test_problems().begin(),
                                             task.test_problems().begin() + n_samples);
    std::vector<int64_t> answers;
    addition_accuracy(whole, task, shown, &answers);
    std::printf("samples (held-out problems, greedy decoding):\n");
    for (int i = 0; i < n_samples; ++i) {
      const AdditionTask::Problem& p = shown[static_cast<size_t>(i)];
      const int64_t got = answers[static_cast<size_t>(i)];
      std::printf("  %*lld + %*lld = %-*lld %s\n", task.digits(), static_cast<long long>(p.a),
                  task.digits(), static_cast<long long>(p.b), task.digits() + 1,
                  static_cast<long long>(got),
                  got == p.a + p.b ? "correct" : ("wrong, expected " + std::to_string(p.a + p.b)).c_str());
    }
  }
  std::printf("try it: build/loom generate --model %s --prompt \"%s\"\n", model_path.c_str(),
              task.decode(task.prompt_tokens({123, 456}).data(), task.prompt_length()).c_str());
}

// Continuations of data.tokens.sample_prompt, sampled (temperature 0.8, top-k 40), decoded with
// the dataset's tokenizer.
void print_token_samples(const GPT& whole, const config::RunConfig& cfg, const std::string& model_path) {
  const config::TokenData& d = cfg.data().tokens();
  const int samples = cfg.train().samples();
  if (samples == 0 || d.sample_tokens() == 0) return;
  const std::string tokenizer_path = tokenizer_path_of(d);
  if (tokenizer_path.empty()) {
    std::printf("samples: none (no tokenizer.model next to the shards; set data.tokens.tokenizer)\n");
    return;
  }
  const std::unique_ptr<Tokenizer> tokenizer = load_tokenizer(tokenizer_path);
  std::vector<int32_t> prompt = tokenizer->encode(d.sample_prompt());
  if (prompt.empty()) prompt.push_back(tokenizer->eos_id());  // a document's start
  const int room = whole.config().max_seq_len - static_cast<int>(prompt.size()) + 1;
  if (room <= 0) {
    std::printf("samples: none (data.tokens.sample_prompt has %zu tokens, more than the model's %d positions)\n",
                prompt.size(), whole.config().max_seq_len);
    return;
  }
  SamplingSettings sampling;
  sampling.temperature = 0.8f;
  sampling.top_k = 40;
  sampling.seed = cfg.train().seed();
  const auto out = generate_tokens(whole, prompt, std::min(room, d.sample_tokens()), samples, sampling);
  std::printf("samples (temperature %.1f, top-k %d):\n", static_cast<double>(sampling.temperature), sampling.top_k);
  for (const std::vector<int32_t>& s : out) {
    std::printf("  %s%s\n", d.sample_prompt().c_str(), tokenizer->decode(s).c_str());
  }
  std::printf("try it: build/loom generate --model %s --prompt \"%s\" --temperature 0.8 --top-k 40\n",
              model_path.c_str(), d.sample_prompt().c_str());
}

// Rank 0, after the last step: the model file and samples from the whole model.
void write_model_and_samples(const TrainingRun& run) {
  const std::string model_path = run.cfg.train().out_dir() + "/model.loom";
  save_model_file(model_path, config_to_text(run.cfg), *run.whole);
  std::printf("saved %s\n", model_path.c_str());
  if (run.task) {
    print_addition_samples(*run.whole, *run.task, run.cfg.train().samples(), model_path);
  } else {
    print_token_samples(*run.whole, run.cfg, model_path);
  }
}

}  // namespace

int run_train(const std::vector<std::string>& args, parallel::Communicator& world) {
  const auto started = std::chrono::steady_clock::now();
  const ParsedArgs parsed = parse_args("train", args, train_flags());
  if (parsed.has("help")) {
    if (world.rank() == 0) print_train_help();
    return 0;
  }
  const TrainOptions options = train_options_of(parsed, started);
  // From here on SIGTERM, SIGUSR1 and SIGINT ask for a stop after the current step.
  SignalStop signals;
  config::RunConfig cfg = resolve_run_config(options.config_path, options.overrides);
  std::vector<EvalTask> eval_tasks = read_eval_tasks(cfg);
  const std::unique_ptr<TrainingRun> run = build_training_run(std::move(cfg), options, world);
  TrainingLoop loop(*run, options, signals, std::move(eval_tasks));
  switch (loop.run()) {
    case LoopEnd::kStopped: return kExitResumable;
    case LoopEnd::kPaused: return 0;
    case LoopEnd::kFinished: break;
  }
  if (run->leader) write_model_and_samples(*run);
  return 0;
}

}  // namespace loom
