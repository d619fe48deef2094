// `loom train`: its flags, the run they and the config describe, the training loop, and what a
// finished run leaves: the model file and samples on rank 0.
//
// The run is built by build_training_run (launch/training_run.h): the config resolved, the
// process grid, this rank's shard of the model and its AdamW, the data, the checkpoints, the
// metrics. The loop (launch/training_loop.h) steps, reports, evaluates, saves, rolls back and
// stops. The model file and samples use the whole model, assembled from the shards on rank 0
// (core/model/assembly.h).
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <csignal>
#include <limits>
#include <optional>
#include <span>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "checkpoints/model_file.h"
#include "core/decoder.h"
#include "core/model/assembly.h"
#include "core/train_step.h"
#include "data/tokenizer.h"
#include "launch/cli.h"
#include "launch/commands.h"
#include "launch/evaluation.h"
#include "launch/run_setup.h"
#include "launch/stop_request.h"
#include "launch/token_run.h"
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

// LOOM_FAULT=nan@N (launch/fault_injection.h): one weight of this rank is NaN for one step and
// restored after it, so that step's loss and gradients are not finite on every rank, as a real
// numerical fault would make them. A LayerNorm weight, which every token passes through.
class PoisonedWeight {
 public:
  explicit PoisonedWeight(GPT& chunk) {
    for (Parameter& p : chunk.parameters()) {
      if (p.value.numel() == 0) continue;
      if (!target_ || p.name.find("ln") != std::string::npos) target_ = p.value.f32();
      if (p.name.find("ln") != std::string::npos) break;
    }
    if (!target_) return;
    kept_ = *target_;
    *target_ = std::numeric_limits<float>::quiet_NaN();
  }
  ~PoisonedWeight() {
    if (target_) *target_ = kept_;
  }
  PoisonedWeight(const PoisonedWeight&) = delete;
  PoisonedWeight& operator=(const PoisonedWeight&) = delete;

 private:
  float* target_ = nullptr;
  float kept_ = 0;
};

// printf into a string.
[[gnu::format(printf, 1, 2)]] std::string text_printf(const char* format, ...) {
  va_list args;
  va_start(args, format);
  char small[512];
  const int n = std::vsnprintf(small, sizeof small, format, args);
  va_end(args);
  if (n < 0) return format;
  if (static_cast<size_t>(n) < sizeof small) return std::string(small, static_cast<size_t>(n));
  std::string big(static_cast<size_t>(n) + 1, '\0');
  va_start(args, format);
  std::vsnprintf(big.data(), big.size(), format, args);
  va_end(args);
  big.resize(static_cast<size_t>(n));
  return big;
}

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
  const SamplingSettings sampling{0.8f, 40, cfg.train().seed()};
  const auto out = generate_tokens(whole, prompt, std::min(room, d.sample_tokens()), samples, sampling);
  std::printf("samples (temperature %.1f, top-k %d):\n", static_cast<double>(sampling.temperature), sampling.top_k);
  for (const std::vector<int32_t>& s : out) {
    std::printf("  %s%s\n", d.sample_prompt().c_str(), tokenizer->decode(s).c_str());
  }
  std::printf("try it: build/loom generate --model %s --prompt \"%s\" --temperature 0.8 --top-k 40\n",
              model_path.c_str(), d.sample_prompt().c_str());
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
  config::RunConfig resolved = resolve_run_config(options.config_path, options.overrides);
  const std::unique_ptr<TrainingRun> run = build_training_run(std::move(resolved), options, world);
  const config::RunConfig& cfg = run->cfg;
  const config::TrainConfig& tc = cfg.train();
  const config::OptimizerConfig& oc = cfg.optimizer();
  const config::CheckpointConfig& ckc = cfg.checkpoint();
  const bool leader = run->leader;
  const parallel::ProcessGrid& grid = *run->grid;
  const bool addition = run->task.has_value();
  std::optional<AdditionTask>& task = run->task;
  std::unique_ptr<TokenRun>& token_run = run->token_run;
  std::vector<GPT*>& chunk_ptrs = run->chunk_ptrs;
  std::vector<AdamW*>& optimizer_ptrs = run->optimizer_ptrs;
  const std::vector<std::unique_ptr<GPT>>& chunks = run->chunks;
  const std::vector<int>& split = run->split;
  std::unique_ptr<GpuTraining>& gpu = run->gpu;
  auto sync_to_host = [&] { run->to_host(); };
  const bool holds_whole = run->holds_whole;
  GPT* const whole = run->whole;
  checkpoint::Checkpointer& checkpointer = *run->checkpointer;
  const std::string& ckpt_root = run->checkpoint_root;
  checkpoint::Progress progress = run->start;
  std::string rollback_dir = run->resumed_dir;
  FaultPlan& faults = run->faults;
  std::unique_ptr<MetricsLog>& metrics = run->metrics;
  MfuMeter& mfu_meter = *run->mfu_meter;
  const double flops_per_token = run->flops_per_token;
  const int B = run->B, T = run->T, accum = run->accum, replicas = run->replicas, global_B = run->global_B;
  const int steps = run->steps;
  const int stop_after = options.stop_after_steps;
  const TimeBudget budget = options.budget;
  auto report = [&](int at_step, const std::string& name, const std::string& line) {
    if (!metrics) return;
    metrics->print_line(line);
    if (!name.empty()) metrics->event(at_step, name, line);
  };

  // The addition task generates every replica's rows of a micro-batch; token shards come from
  // the loader, which reads only this rank's rows.
  const size_t rows = addition ? static_cast<size_t>(global_B) * T : 0;
  std::vector<std::vector<int32_t>> tokens(static_cast<size_t>(accum), std::vector<int32_t>(rows));
  std::vector<std::vector<int32_t>> targets = tokens;
  std::vector<MicroBatch> addition_micro(static_cast<size_t>(accum));
  const size_t my_rows = static_cast<size_t>(grid.coord().dp) * B * T;
  using Clock = std::chrono::steady_clock;
  auto window_start = Clock::now();
  double window_loss = 0;
  int window_steps = 0;
  const int first_step = static_cast<int>(std::min<int64_t>(progress.step, steps));
  const int end_step = stop_after > 0 ? std::min(steps, first_step + stop_after) : steps;
  const uint64_t tokens_per_step = static_cast<uint64_t>(global_B) * static_cast<uint64_t>(T) * static_cast<uint64_t>(accum);
  // Waits for the save in flight (rank 0: until it is committed), then agrees over the world (a
  // collective): a save that failed on any rank stops every rank with its message, rather than
  // leave the others waiting for that rank.
  auto wait_for_save = [&] {
    std::string error;
    try {
      checkpointer.wait();
    } catch (const UserError& e) {
      error = e.what();
    }
    agree_on_error(world, error);
  };
  // Saves the state after `done` steps (collective).
  int saved_step = first_step;
  // `final`: nothing changes the state after it (the last step, or a stop), so it is written
  // straight from the model and optimizer, without a host copy.
  auto save_checkpoint = [&](int done, bool final) {
    progress.step = done;
    progress.tokens_seen += tokens_per_step * static_cast<uint64_t>(done - saved_step);
    saved_step = done;
    progress.has_loader = token_run != nullptr;
    if (token_run) progress.loader = token_run->state();
    wait_for_save();
    sync_to_host();
    checkpointer.save(cfg, progress, chunk_ptrs, optimizer_ptrs, "loom train", final);
    rollback_dir = ckpt_root + "/" + checkpoint::step_dir_name(done);
    report(done, "checkpoint",
           text_printf("checkpoint %5d/%d | %s/%s | training held %.0f ms (host copy %.0f ms)%s", done, steps,
                       ckpt_root.c_str(), checkpoint::step_dir_name(done).c_str(),
                       1e3 * checkpointer.last_blocked_seconds(), 1e3 * checkpointer.last_copy_seconds(),
                       ckc.async() ? ", writing in the background" : ""));
  };
  // Guards: non-finite steps are skipped; guard.rollback_after of them in a row reload the last
  // checkpoint (collective: every rank sees the same global loss and gradient norm).
  const config::GuardConfig& guard = cfg.guard();
  int bad_in_a_row = 0, rollbacks = 0;
  EtaClock eta(first_step);
  auto roll_back = [&](int failed_step) {
    if (rollback_dir.empty()) {
      fail_user(bad_in_a_row, "steps in a row had a non-finite loss or gradient norm (the last at step", failed_step,
                ") and there is no checkpoint to roll back to; set checkpoint.every, or lower optimizer.lr");
    }
    if (++rollbacks > guard.max_rollbacks()) {
      fail_user("the loss or gradient norm is still not finite at step", failed_step, "after", guard.max_rollbacks(),
                "rollbacks (guard.max_rollbacks): the fault is in the data or the settings, not transient;"
                " lower optimizer.lr or raise optimizer.warmup_steps");
    }
    wait_for_save();  // collective, and rank 0 enters it once the checkpoint is committed
    const checkpoint::Resumed back = checkpoint::resume(
        rollback_dir, ckpt_root, cfg, world, chunk_ptrs, optimizer_ptrs,
        [](const std::string& warning) { std::fprintf(stderr, "loom train: warning: %s\n", warning.c_str()); });
    if (gpu) gpu->from_host();
    progress = back.progress;
    saved_step = static_cast<int>(progress.step);
    if (token_run) {
      token_run = std::make_unique<TokenRun>(cfg, BatchLayout{T, B, accum, replicas, grid.coord().dp},
                                             progress.loader, world);
    }
    report(static_cast<int>(progress.step), "rollback",
           text_printf("guard: %d non-finite steps in a row: rolled back to %s (step %lld), rollback %d of at most %d",
                       bad_in_a_row, back.dir.c_str(), static_cast<long long>(progress.step), rollbacks,
                       guard.max_rollbacks()));
    eta = EtaClock(static_cast<int>(progress.step));
    bad_in_a_row = 0;
    window_loss = 0;
    window_steps = 0;
    window_start = Clock::now();
    return static_cast<int>(progress.step);
  };
  TimeBudget time_budget = budget;
  int step = first_step;
  while (step < end_step) {
    const auto step_start = Clock::now();
    if (faults.due(FaultKind::kHang, step + 1)) hang_this_process();
    if (faults.due(FaultKind::kKill, step + 1)) kill_this_process();
    if (faults.due(FaultKind::kSignal, step + 1)) std::raise(SIGUSR1);
    if (faults.due(FaultKind::kUserError, step + 1)) {
      fail_user("LOOM_FAULT: an injected user error on this rank alone at step", step + 1);
    }
    const float lr = lr_at_step(step, steps, oc.lr(), oc.warmup_steps(), oc.min_lr_ratio());
    std::span<const MicroBatch> micro = addition_micro;
    if (addition) {
      for (int i = 0; i < accum; ++i) {
        const size_t m = static_cast<size_t>(i);
        task->train_batch(static_cast<uint64_t>(step) * accum + i, global_B, tokens[m].data(), targets[m].data());
        addition_micro[m] = MicroBatch{tokens[m].data() + my_rows, targets[m].data() + my_rows, B, T};
      }
    } else {
      micro = token_run->next_step();
    }
    std::optional<PoisonedWeight> poisoned;
    const bool poison = faults.due(FaultKind::kNan, step + 1);
    if (poison) {
      // On a GPU the poisoned host weight travels there and back (on this rank alone); the step's
      // update is skipped everywhere (its gradient norm is not finite), so the host weights are
      // the GPU's before the step.
      sync_to_host();
      poisoned.emplace(*chunks[0]);
      if (gpu) gpu->weights_from_host();
    }
    const StepResult result = gpu ? gpu->step(micro, lr) : train_step(chunk_ptrs, optimizer_ptrs, micro, lr);
    poisoned.reset();
    if (poison && gpu) gpu->weights_from_host();
    if (!result.updated) {
      if (guard.rollback_after() == 0) {
        fail_user("the loss became", result.loss, "(gradient norm", result.grad_norm, ") at step", step + 1,
                  "(lower optimizer.lr or raise optimizer.warmup_steps; guard.rollback_after > 0 skips such steps)");
      }
      ++bad_in_a_row;
      report(step + 1, "skip",
             text_printf("guard: step %d: loss %g, gradient norm %g: update skipped (%d in a row; a rollback after %d)",
                         step + 1, result.loss, result.grad_norm, bad_in_a_row, guard.rollback_after()));
      if (bad_in_a_row >= guard.rollback_after()) {
        step = roll_back(step + 1);
        continue;
      }
    } else {
      bad_in_a_row = 0;
    }
    const int done = step + 1;
    step = done;
    if (result.updated) {
      window_loss += result.loss;
      ++window_steps;
    }
    time_budget.record_step(std::chrono::duration<double>(Clock::now() - step_start).count());
    const bool last = done == steps;
    const bool log_step = done % tc.log_every() == 0 || last;
    // Memory: the largest peak over the ranks, in MiB (every rank takes part at a log step): the
    // GPU's when the run trains there, else the process's resident set.
    int32_t peak_mib = 0;
    if (log_step) {
      peak_mib = static_cast<int32_t>((gpu ? gpu->device_peak_bytes() : peak_rss_bytes()) >> 20);
      if (world.size() > 1) world.all_reduce(&peak_mib, &peak_mib, 1, DType::kI32, parallel::ReduceOp::kMax);
    }
    if (metrics && log_step && window_steps > 0) {
      const double seconds = std::chrono::duration<double>(Clock::now() - window_start).count();
      TrainMetrics m;
      m.step = done;
      m.steps = steps;
      m.loss = window_loss / window_steps;
      m.lr = lr;
      m.grad_norm = result.grad_norm;
      m.tokens_per_s = window_steps * static_cast<double>(global_B) * T * accum / seconds;
      m.mfu = mfu_meter.mfu(m.tokens_per_s * flops_per_token);
      m.mem_bytes = static_cast<uint64_t>(peak_mib) << 20;
      m.eta_s = eta.eta_s(done, steps);
      m.step_ms = 1e3 * seconds / window_steps;
      metrics->progress(m);
    }
    if (metrics) metrics->tick(done, steps, eta.eta_s(done, steps));
    if (log_step) {
      window_loss = 0;
      window_steps = 0;
      window_start = Clock::now();
    }
    // Every rank learns whether any rank was signalled (or rank 0's budget ran out) after this
    // same step, so all stop together.
    StopReason local = signals.received();
    if (leader && local == StopReason::kNone && time_budget.exhausted(Clock::now())) local = StopReason::kTimeBudget;
    const StopDecision stop = last ? StopDecision{} : agree_on_stop(world, local);
    // A step inside a run of non-finite ones is not a state to come back to: no checkpoint of it
    // (the last one stays the rollback point, and the one a stopped run resumes from).
    const bool healthy = bad_in_a_row == 0;
    if (stop.stop()) {
      if (healthy) save_checkpoint(done, /*final=*/true);
      // Collective, and rank 0 enters it once the checkpoint is committed: mpirun ends the job as
      // soon as one rank exits non-zero, so none may leave before the commit.
      wait_for_save();
      report(done, "stop",
             healthy ? text_printf("stopping: %s on rank %d: finished step %d of %d, checkpoint %s committed; exit %d "
                                   "(resume with --resume auto)",
                                   stop_reason_name(stop.reason), stop.rank, done, steps,
                                   checkpointer.last_committed().c_str(), kExitResumable)
                     : text_printf("stopping: %s on rank %d after step %d of %d, not saved (the last steps were not "
                                   "finite): --resume auto goes back to %s; exit %d",
                                   stop_reason_name(stop.reason), stop.rank, done, steps,
                                   rollback_dir.empty() ? "the start" : rollback_dir.c_str(), kExitResumable));
      return kExitResumable;
    }
    if (last || done == end_step || (healthy && ckc.every() > 0 && done % ckc.every() == 0)) {
      save_checkpoint(done, /*final=*/last || done == end_step);
      time_budget.record_save(checkpointer.last_save_seconds());
    }
    if ((tc.eval_every() > 0 && done % tc.eval_every() == 0) || last) {
      const auto eval_start = Clock::now();
      if (addition) {
        sync_to_host();  // the accuracy is measured on the host model
        if (!holds_whole) assemble_whole_model(chunk_ptrs, grid, split, whole);
        if (leader) {
          const double acc = addition_accuracy(*whole, *task, task->test_problems());
          report(done, "", text_printf("eval  %5d/%d | held-out exact match %.1f%% (%d problems)", done, steps,
                                       100.0 * acc, static_cast<int>(task->test_problems().size())));
          metrics->eval(done, {{"accuracy", acc}});
        }
      } else {
        double val_loss = 0;
        auto evaluate = [&](std::span<const MicroBatch> val_micro) {
          return gpu ? gpu->evaluate(val_micro) : evaluate_loss(chunk_ptrs, grid.dp(), val_micro);
        };
        if (token_run->validation_loss(evaluate, &val_loss) && leader) {
          report(done, "", text_printf("eval  %5d/%d | validation loss %.4f | perplexity %.2f", done, steps, val_loss,
                                       std::exp(val_loss)));
          metrics->eval(done, {{"val_loss", val_loss}, {"perplexity", std::exp(val_loss)}});
        }
        if (last) {
          sync_to_host();
          if (!holds_whole) assemble_whole_model(chunk_ptrs, grid, split, whole);
        }
      }
      // Evaluation time does not count as training throughput: the window starts that much later.
      window_start += Clock::now() - eval_start;
    }
  }
  if (metrics) metrics->clear_bar();
  wait_for_save();
  if (leader && !checkpointer.last_committed().empty()) {
    std::printf("checkpoint saved: %s\n", checkpointer.last_committed().c_str());
  }
  if (end_step < steps) {
    if (leader) {
      std::printf("stopped after step %d of %d (--stop-after-steps); continue with --resume auto\n", end_step, steps);
    }
    return 0;
  }
  if (first_step == steps) {
    if (leader) std::printf("the checkpoint is at step %d of train.steps = %d: nothing left to train\n", first_step, steps);
    if (!holds_whole) assemble_whole_model(chunk_ptrs, grid, split, whole);
  }
  if (!leader) return 0;

  const std::string model_path = tc.out_dir() + "/model.loom";
  save_model_file(model_path, config_to_text(cfg), whole->parameters());
  std::printf("saved %s\n", model_path.c_str());

  if (addition) {
    print_addition_samples(*whole, *task, tc.samples(), model_path);
  } else {
    print_token_samples(*whole, cfg, model_path);
  }
  return 0;
}

}  // namespace loom
