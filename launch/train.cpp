// `loom train`: the training loop, on one process or on a tensor-parallel group under mpirun.
//
// Reads the config, builds the dataset, the process grid and this rank's shard of the model,
// trains with AdamW (warmup + cosine, gradient accumulation, global-norm clipping), and on rank 0
// prints a progress line every log_every steps and the held-out exact-match accuracy every
// eval_every steps, writes the model file and ends with samples. Evaluation, samples and the
// model file use the whole model, assembled from the shards on rank 0.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdarg>
#include <csignal>
#include <limits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "checkpoints/checkpoint.h"
#include "core/base/format.h"
#include "checkpoints/model_file.h"
#include "core/backend/cpu_backend.h"
#include "core/model/assembly.h"
#include "core/optimizer.h"
#include "core/train_step.h"
#include "launch/cli.h"
#include "launch/commands.h"
#include "launch/earlier_run.h"
#include "launch/evaluation.h"
#include "launch/fault_injection.h"
#include "launch/gpu_training.h"
#include "launch/launch_env.h"
#include "launch/memory_plan.h"
#include "launch/metrics.h"
#include "launch/stop_request.h"
#include "core/decoder.h"
#include "data/tokenizer.h"
#include "launch/run_setup.h"
#include "launch/token_run.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/process_grid.h"

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
  ParsedArgs parsed = parse_args("train", args, train_flags());
  const bool leader = world.rank() == 0;
  if (parsed.has("help")) {
    if (leader) {
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
    return 0;
  }
  if (parsed.positionals.size() > 1) fail_user("loom train takes one config file, got", parsed.positionals.size());
  // From here on SIGTERM, SIGUSR1 and SIGINT ask for a stop after the current step.
  SignalStop signals;
  const std::string config_path = parsed.positionals.empty() ? "" : parsed.positionals[0];
  const auto overrides = parsed.flags.count("set") ? parsed.flags.at("set") : std::vector<std::string>{};
  config::RunConfig cfg = resolve_run_config(config_path, overrides);

  const config::TrainConfig& tc = cfg.train();
  const config::OptimizerConfig& oc = cfg.optimizer();
  const config::ParallelConfig& pc = cfg.parallel();
  // Every group of the grid inherits the world's deadline: a rank that stops answering turns into
  // an error naming it and the operation on every rank waiting for it, never into a hang.
  world.set_timeout(std::chrono::milliseconds(static_cast<int64_t>(1e3 * cfg.guard().collective_timeout_s())));
  const parallel::ProcessGrid grid(world, parallel::GridShape{pc.tp(), pc.pp(), pc.dp()});
  const int threads = set_thread_count(tc.threads());
  // The data: the built-in addition task, or token shards from `loom prepare`.
  const bool addition = cfg.data().has_addition();
  std::optional<AdditionTask> task;
  if (addition) task.emplace(make_task(cfg));
  const GPTConfig model_config = model_config_of(cfg);
  const std::vector<int> split = pipeline_split(cfg);
  // The memory the run needs, known before anything is allocated: a run the host cannot hold
  // stops here on every rank, with the estimate and what to lower.
  const MemoryEstimate memory = estimate_memory(cfg);
  const int64_t host_available = host_available_bytes();
  {
    std::string error;
    try {
      check_memory_fits(memory, current_launch().local_size, leader, host_available);
    } catch (const UserError& e) {
      error = e.what();
    }
    agree_on_error(world, error);
  }
  // This rank's model chunks (one unless the pipeline is interleaved), each with its optimizer.
  const int n_chunks = pc.virtual_stages();
  const AdamWSettings settings{oc.beta1(), oc.beta2(), oc.eps(), oc.weight_decay(), oc.grad_clip()};
  // The ops of the model on the CPU: fp32, or bf16 mixed precision when train.precision says so.
  CpuBackend cpu_backend(cpu_precision_of(cfg));
  std::vector<std::unique_ptr<GPT>> chunks;
  std::vector<std::unique_ptr<AdamW>> optimizers;
  std::vector<GPT*> chunk_ptrs;
  std::vector<AdamW*> optimizer_ptrs;
  for (int c = 0; c < n_chunks; ++c) {
    ModelParallel layout = model_parallel_for(grid, split, pc.sequence_parallel(), c, n_chunks);
    layout.backend = &cpu_backend;
    chunks.push_back(std::make_unique<GPT>(model_config, layout));
    chunks.back()->init_weights(tc.seed());
    chunks.back()->set_recompute(static_cast<Recompute>(tc.recompute()));
    optimizers.push_back(std::make_unique<AdamW>(*chunks.back(), settings, &grid.dp()));
    chunk_ptrs.push_back(chunks.back().get());
    optimizer_ptrs.push_back(optimizers.back().get());
  }
  const Recompute recompute = static_cast<Recompute>(tc.recompute());

  // Checkpoints: resume first, so that everything below starts where the checkpoint left off.
  // Every rank looks at the directory itself and reaches the same decision (a shared file system).
  if (parsed.has("resume") && parsed.get("resume", "").empty()) {
    fail_user("--resume expects auto, a checkpoint directory, or none");
  }
  const EarlierRun earlier = find_earlier_run(cfg);
  const StartPlan start_plan = plan_start(parsed.get("resume", ""), parsed.has("fresh"), earlier);
  const std::string& resume_spec = start_plan.resume_spec;
  const int stop_after = parsed.get_int("stop-after-steps", 0);
  const TimeBudget budget = parsed.has("time-budget")
                                ? TimeBudget(parse_duration(parsed.get("time-budget", ""), "--time-budget"), started)
                                : TimeBudget();
  if (parsed.has("stop-after-steps") && stop_after <= 0) {
    fail_user("--stop-after-steps is", stop_after, "but must be a positive number of steps");
  }
  const config::CheckpointConfig& ckc = cfg.checkpoint();
  const std::string ckpt_root = checkpoint_root(cfg);
  checkpoint::Policy policy{ckpt_root, ckc.keep_last(), ckc.keep_every(), ckc.async(), ckc.commit_timeout_s()};
  checkpoint::Progress progress;
  bool resumed_run = false;
  std::string resumed_dir, resume_message;
  if (resume_spec != "none") {
    checkpoint::Resumed resumed;
    try {
      resumed = checkpoint::resume(
          resume_spec, ckpt_root, cfg, world, chunk_ptrs, optimizer_ptrs,
          [](const std::string& warning) { std::fprintf(stderr, "loom train: warning: %s\n", warning.c_str()); });
    } catch (const checkpoint::DifferentModel& e) {
      // Every rank throws it alike. Resuming is the default: say how to start afresh instead.
      if (parsed.has("resume")) throw;
      fail_user(e.differences() + "; loom train resumes the checkpoints under", ckpt_root,
                "by default: choose another train.out_dir for this model, or pass --fresh to start afresh and "
                "delete them at this run's first save");
    }
    if (resumed.resumed) {
      resumed_run = true;
      resumed_dir = resumed.dir;
      progress = resumed.progress;
      const checkpoint::Layout& l = resumed.header.layout();
      resume_message = text_printf("resumed from %s: step %lld, saved under tp=%d x pp=%d x dp=%d%s", resumed.dir.c_str(),
                                   static_cast<long long>(progress.step), l.tp(), l.pp(), l.dp(),
                                   resumed.header.optimizer().has_moments() ? "" : " (weights only: fresh optimizer state)");
      if (leader) std::printf("%s\n", resume_message.c_str());
    } else if (leader) {
      std::printf("resume: no checkpoint under %s yet; starting afresh\n", ckpt_root.c_str());
    }
  }
  std::string metrics_note, metrics_error;
  // The directories this run writes into, made (and found writable) now rather than at its first
  // save or at the end (the same file system for every rank: rank 0 checks for all).
  std::string dir_error;
  if (leader) {
    for (const std::string& dir : {tc.out_dir(), ckpt_root}) {
      std::error_code ec;
      std::filesystem::create_directories(dir, ec);
      if (ec || ::access(dir.c_str(), W_OK) != 0) {
        dir_error = str_cat("cannot write into", dir, "(" + (ec ? ec.message() : std::string(std::strerror(errno))) + "):",
                                "choose another train.out_dir or checkpoint.dir");
        break;
      }
    }
  }
  agree_on_error(world, dir_error);
  if (!resumed_run) {
    // Starting afresh (--fresh) where an earlier run left checkpoints: they go once this run has
    // saved one. Its metrics never mix with this run's.
    policy.replace_earlier_run = start_plan.fresh && !earlier.checkpoints.empty();
    if (leader && policy.replace_earlier_run) {
      std::printf("--fresh: %s holds %zu checkpoint%s of an earlier run (newest %s); this run starts afresh and "
                  "deletes them at its first save\n",
                  ckpt_root.c_str(), earlier.checkpoints.size(), earlier.checkpoints.size() == 1 ? "" : "s",
                  earlier.checkpoints[0].c_str());
    }
    if (leader) {
      try {
        metrics_note = set_aside_earlier_metrics(earlier, start_plan.fresh);
      } catch (const UserError& e) {
        metrics_error = e.what();
      }
      if (!metrics_note.empty()) std::printf("%s\n", metrics_note.c_str());
    }
  }
  agree_on_error(world, metrics_error);
  FaultPlan faults = FaultPlan::from_environment(world.rank());
  if (!faults.empty()) {
    policy.halfway_hook = [save_faults = faults](int64_t step) mutable {
      if (save_faults.due(FaultKind::kKillInSave, static_cast<int>(step))) kill_this_process();
      if (save_faults.due(FaultKind::kFailSave, static_cast<int>(step))) {
        fail_user("writing the step", step, "checkpoint shard failed: an injected disk error (LOOM_FAULT)");
      }
    };
  }
  checkpoint::Checkpointer checkpointer(policy, world);
  // Where a rollback goes: the checkpoint this run resumed from or last saved.
  std::string rollback_dir = resumed_dir;

  // The working copy on the GPU when the run trains there (train.device); the host objects above
  // hold what checkpoints, evaluation and the model file read, refreshed before each of them.
  const int B = tc.micro_batch_size(), accum = tc.grad_accum_steps();
  const int T = addition ? task->sequence_length() : cfg.data().tokens().seq_len();
  // train.precision PRECISION_FP32 keeps a DEVICE_AUTO run on the CPU: the GPU trains in bf16.
  config::RunConfig device_cfg = cfg;
  if (cfg.train().precision() == config::TrainConfig::PRECISION_FP32 &&
      cfg.train().device() == config::TrainConfig::DEVICE_AUTO) {
    device_cfg.mutable_train()->set_device(config::TrainConfig::DEVICE_CPU);
  }
  std::unique_ptr<GpuTraining> gpu = GpuTraining::create(device_cfg, grid, *chunks[0], *optimizers[0], B, T);
  auto sync_to_host = [&] {
    if (gpu) gpu->to_host();
  };

  // Rank 0 needs the whole model for evaluation, samples and the model file: in one process that
  // holds it all, the training model itself; else a copy without gradients, assembled from the
  // shards when needed.
  const bool holds_whole = world.size() == 1 && chunks.size() == 1;
  std::unique_ptr<GPT> whole_copy;
  if (leader && !holds_whole) {
    ModelParallel weights_only;
    weights_only.gradients = false;
    whole_copy = std::make_unique<GPT>(model_config, weights_only);
  }
  GPT* const whole = holds_whole ? chunks[0].get() : whole_copy.get();

  // Each micro-batch holds B sequences per data-parallel replica; this rank takes its rows.
  const int replicas = pc.dp(), global_B = B * replicas;
  const int steps = tc.steps();
  std::unique_ptr<TokenRun> token_run;
  if (!addition) {
    const LoaderState start = progress.has_loader ? progress.loader : LoaderState{tc.seed(), 0};
    token_run = std::make_unique<TokenRun>(cfg, BatchLayout{T, B, accum, replicas, grid.coord().dp}, start, world);
  }
  if (leader) {
    std::printf("loom train: GPT %d layers, %d heads, width %d, vocab %d, seq %d: %s parameters\n",
                model_config.n_layer, model_config.n_head, model_config.n_embd,
                model_config.vocab_size, model_config.max_seq_len,
                format_count(static_cast<double>(whole->num_parameters())).c_str());
    std::string stages;
    for (int n : split) stages += (stages.empty() ? "" : ", ") + std::to_string(n);
    const std::string pipeline =
        n_chunks == 1 ? ", blocks per stage " + stages + ", 1F1B"
                      : ", blocks per virtual stage " + stages + ", interleaved (" +
                            std::to_string(n_chunks) + " chunks per rank)";
    if (world.size() > 1) std::printf("launch: %s\n", current_launch().describe().c_str());
    std::printf("layout: %s%s, %d process%s x %d threads%s\n", grid.shape().str().c_str(),
                pc.sequence_parallel() ? " (sequence parallel)" : "", world.size(),
                world.size() == 1 ? "" : "es", threads, pc.pp() > 1 ? pipeline.c_str() : "");
    if (pc.pp() > 1) {
      std::printf("pipeline: %d micro-batches per step over %d stages: bubble %.1f%% of the step "
                  "((pp - 1) / (%smicro-batches + pp - 1); raise train.grad_accum_steps%s to shrink it)\n",
                  tc.grad_accum_steps(), pc.pp(),
                  100.0 * parallel::pipeline_bubble_fraction(pc.pp(), n_chunks, tc.grad_accum_steps()),
                  n_chunks == 1 ? "" : "chunks x ",
                  n_chunks == 1 ? " or parallel.virtual_stages" : "");
    }
    // Activations of one micro-batch on this rank (all its chunks); a pipeline rank holds several.
    double kept = 0, all = 0;
    for (const auto& chunk : chunks) {
      kept += static_cast<double>(chunk->activation_bytes(recompute, B, T)) / (1 << 20);
      all += static_cast<double>(chunk->activation_bytes(Recompute::kNone, B, T)) / (1 << 20);
    }
    if (gpu) std::printf("device: %s\n", gpu->describe().c_str());
    if (!gpu && cpu_backend.precision() == Precision::kBF16) {
      std::printf("precision: bf16 mixed precision emulated on the CPU (f32 master weights; train.precision)\n");
    }
    std::printf("activations: %.1f MiB per rank", kept);
    if (recompute != Recompute::kNone) {
      std::printf(" (recompute %s saves %.1f MiB of %.1f)",
                  recompute == Recompute::kFull ? "full" : "selective", all - kept, all);
    }
    std::printf("\n");
    std::printf("memory: estimated %s; this host has %s available\n", memory.describe().c_str(),
                host_available > 0 ? format_bytes(static_cast<uint64_t>(host_available)).c_str() : "an unknown amount");
    const std::string data = addition ? str_cat(std::to_string(task->digits()) + "-digit addition,", task->test_problems().size(),
                                                "held-out problems")
                                      : token_run->describe();
    std::printf("data: %s; batch %d x %d replicas x %d accumulation, %d steps\n", data.c_str(), B,
                replicas, accum, steps);
    std::fflush(stdout);
  }

  // Metrics (rank 0 reports; docs/metrics.md). MFU's denominator: metrics.peak_tflops per
  // process, or on CPU the sgemm rate of every host's cores, measured by one rank per host on
  // all the cores it may run on while the others wait (ranks sharing cores must not count them
  // twice, nor slow each other's measurement), summed over the hosts.
  const config::MetricsConfig& mc = cfg.metrics();
  // On GPUs without metrics.peak_tflops: 989 TFLOP/s each, the dense bf16 rate of an H100/H200 SXM.
  const double peak_tflops = mc.peak_tflops() > 0 ? mc.peak_tflops() : gpu ? 989.0 : 0.0;
  double peak_flops = 1e12 * peak_tflops * world.size();
  if (peak_flops == 0) {
    const LaunchInfo& launch = current_launch();
    if (world.size() > 1) world.barrier();
    float mine = launch.local_rank == 0 ? static_cast<float>(measure_cpu_peak_flops(launch.cpus)) : 0.0f;
    if (world.size() > 1) world.all_reduce(&mine, &mine, 1, DType::kF32, parallel::ReduceOp::kSum);
    peak_flops = mine;
  }
  MfuMeter mfu_meter(peak_flops, peak_tflops == 0);
  std::unique_ptr<MetricsLog> metrics;
  double flops_per_token = 0;
  if (leader) {
    // Under mpirun a rank's stdout is a pseudo-terminal even when mpirun writes to a file: only
    // a process started on its own knows that it writes to a terminal.
    const bool standalone = current_launch().launcher == Launcher::kStandalone;
    try {
      metrics = std::make_unique<MetricsLog>(metrics_path(cfg), mc.progress_bar() && standalone, stdout,
                                             tensorboard_dir(cfg));
    } catch (const UserError& e) {
      metrics_error = e.what();
    }
  }
  // Rank 0 alone opens the file: every rank stops if it cannot (none left waiting for rank 0).
  agree_on_error(world, metrics_error);
  if (leader) {
    flops_per_token = model_flops_per_token(model_config, whole->num_parameters(), T);
    std::printf("metrics: %.3g model FLOPs per token; MFU against %s = %.3g GFLOP/s%s%s%s%s\n", flops_per_token,
                mc.peak_tflops() > 0 ? "metrics.peak_tflops x processes"
                : gpu               ? "989 TFLOP/s (dense bf16, H100/H200 SXM) x GPUs"
                                    : "the measured sgemm rate of the hosts' cores (raised to training's if higher)",
                peak_flops / 1e9, metrics->jsonl_path().empty() ? "" : "; JSON lines to ",
                metrics->jsonl_path().c_str(), metrics->tensorboard_path().empty() ? "" : "; TensorBoard events to ",
                metrics->tensorboard_path().c_str());
    std::fflush(stdout);
    if (!resume_message.empty()) metrics->event(static_cast<int>(progress.step), "resume", resume_message);
  }
  // Rank 0 prints `line` (clearing the progress bar) and records it as event `name` (none: "").
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
