#include "launch/training_run.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include "core/base/format.h"
#include "core/model/assembly.h"
#include "launch/earlier_run.h"
#include "launch/launch_env.h"
#include "launch/model_source.h"
#include "launch/run_setup.h"
#include "parallel/pipeline_schedule.h"

namespace loom {
namespace {

void print_warning(const std::string& warning) { std::fprintf(stderr, "loom train: warning: %s\n", warning.c_str()); }

// Every group of the grid inherits the world's deadline: a rank that stops answering turns into an
// error naming it and the operation on every rank waiting for it, never into a hang.
void set_up_layout(TrainingRun& run) {
  const config::TrainConfig& tc = run.cfg.train();
  const config::ParallelConfig& pc = run.cfg.parallel();
  run.world.set_timeout(std::chrono::milliseconds(static_cast<int64_t>(1e3 * run.cfg.guard().collective_timeout_s())));
  run.grid = std::make_unique<parallel::ProcessGrid>(run.world, parallel::GridShape{pc.tp(), pc.pp(), pc.dp()});
  run.threads = set_thread_count(tc.threads());
  if (run.cfg.data().has_addition()) run.task.emplace(make_task(run.cfg));
  run.model_config = model_config_of(run.cfg);
  run.split = pipeline_split(run.cfg);
  // Each micro-batch holds B sequences per data-parallel replica; this rank takes its rows.
  run.B = tc.micro_batch_size();
  run.accum = tc.grad_accum_steps();
  run.T = run.task ? run.task->sequence_length() : run.cfg.data().tokens().seq_len();
  run.replicas = pc.dp();
  run.global_B = run.B * run.replicas;
  run.steps = tc.steps();
}

// The memory the run needs, known before anything is allocated: a run the host cannot hold stops
// here on every rank, with the estimate and what to lower.
void check_memory(TrainingRun& run) {
  run.memory = estimate_memory(run.cfg);
  run.host_available = host_available_bytes();
  std::string error;
  try {
    check_memory_fits(run.memory, current_launch().local_size, run.leader, run.host_available);
  } catch (const UserError& e) {
    error = e.what();
  }
  agree_on_error(run.world, error);
}

void build_model(TrainingRun& run) {
  const config::TrainConfig& tc = run.cfg.train();
  const config::OptimizerConfig& oc = run.cfg.optimizer();
  const config::ParallelConfig& pc = run.cfg.parallel();
  const int n_chunks = pc.virtual_stages();
  const AdamWSettings settings{oc.beta1(), oc.beta2(), oc.eps(), oc.weight_decay(), oc.grad_clip()};
  run.cpu_backend = std::make_unique<CpuBackend>(cpu_precision_of(run.cfg));
  // The same model and optimizer on either device: on a GPU its backend and groups are the
  // device's (the grid's own groups stay the host's, for assembly and checkpoints).
  parallel::Communicator* dp = run.device ? &run.device->dp() : &run.grid->dp();
  for (int c = 0; c < n_chunks; ++c) {
    ModelParallel layout = model_parallel_for(*run.grid, run.split, pc.sequence_parallel(), c, n_chunks);
    layout.backend = run.cpu_backend.get();
    if (run.device) layout = run.device->on_device(layout);
    run.chunks.push_back(std::make_unique<GPT>(run.model_config, layout));
    run.chunks.back()->init_weights(tc.seed());
    run.chunks.back()->set_recompute(static_cast<Recompute>(tc.recompute()));
    run.optimizers.push_back(std::make_unique<AdamW>(*run.chunks.back(), settings, dp));
    run.chunk_ptrs.push_back(run.chunks.back().get());
    run.optimizer_ptrs.push_back(run.optimizers.back().get());
  }
}

// Resumes `resume_spec` ("none": nothing to resume), so that everything after starts where the
// checkpoint left off. Every rank looks at the directory itself and reaches the same decision (a
// shared file system). Returns whether the run resumed.
bool resume_from_checkpoint(TrainingRun& run, const std::string& resume_spec, const TrainOptions& options) {
  if (resume_spec == "none") return false;
  checkpoint::Resumed resumed;
  try {
    resumed = run.resume(resume_spec);
  } catch (const checkpoint::DifferentModel& e) {
    // Every rank throws it alike. Resuming is the default: say how to start afresh instead.
    if (!options.resume.empty()) throw;
    fail_user(e.differences() + "; loom train resumes the checkpoints under", run.checkpoint_root,
              "by default: choose another train.out_dir for this model, or pass --fresh to start afresh and "
              "delete them at this run's first save");
  }
  if (!resumed.resumed) {
    if (run.leader) std::printf("resume: no checkpoint under %s yet; starting afresh\n", run.checkpoint_root.c_str());
    return false;
  }
  run.resumed_dir = resumed.dir;
  run.start = resumed.progress;
  const checkpoint::Layout& l = resumed.header.layout();
  run.resume_message = "resumed from " + resumed.dir + ": step " + std::to_string(run.start.step) +
                       ", saved under tp=" + std::to_string(l.tp()) + " x pp=" + std::to_string(l.pp()) +
                       " x dp=" + std::to_string(l.dp()) +
                       (resumed.header.optimizer().has_moments() ? "" : " (weights only: fresh optimizer state)");
  if (run.leader) std::printf("%s\n", run.resume_message.c_str());
  return true;
}

// The directories this run writes into, made (and found writable) now rather than at its first
// save or at the end (the same file system for every rank: rank 0 checks for all).
void make_output_directories(TrainingRun& run) {
  std::string error;
  if (run.leader) {
    for (const std::string& dir : {run.cfg.train().out_dir(), run.checkpoint_root}) {
      std::error_code ec;
      std::filesystem::create_directories(dir, ec);
      if (ec || ::access(dir.c_str(), W_OK) != 0) {
        error = str_cat("cannot write into", dir, "(" + (ec ? ec.message() : std::string(std::strerror(errno))) + "):",
                        "choose another train.out_dir or checkpoint.dir");
        break;
      }
    }
  }
  agree_on_error(run.world, error);
}

// --init-from: every rank loads the model whole and copies its shards out of it; the optimizers
// keep the fresh state build_model gave them, and the run starts at step 0 with its schedule.
// Collective: a model that fails to load or fit on any rank stops every rank with its message.
void init_from_model(TrainingRun& run, const std::string& path) {
  std::string error;
  try {
    const LoadedModel loaded = load_trained_model(path);
    copy_model_into(loaded, run.cfg, run.chunk_ptrs);
    run.resume_message = "initialised from " + loaded.source +
                         (loaded.step >= 0 ? " (its step " + std::to_string(loaded.step) + ")" : std::string()) +
                         ": weights only; fresh optimizer and schedule, step 0";
  } catch (const UserError& e) {
    error = "--init-from: " + std::string(e.what());
  }
  agree_on_error(run.world, error);
  if (run.leader) std::printf("%s\n", run.resume_message.c_str());
}

// Starting afresh (--fresh) where an earlier run left checkpoints: they go once this run has saved
// one. Its metrics never mix with this run's. Returns whether the first save replaces the earlier
// run's checkpoints. Collective (every rank agrees on rank 0's error).
bool set_aside_earlier_run(TrainingRun& run, const StartPlan& plan, const EarlierRun& earlier, bool resumed) {
  bool replace_earlier_run = false;
  std::string error;
  if (!resumed) {
    replace_earlier_run = plan.fresh && !earlier.checkpoints.empty();
    if (run.leader && replace_earlier_run) {
      std::printf("--fresh: %s holds %zu checkpoint%s of an earlier run (newest %s); this run starts afresh and "
                  "deletes them at its first save\n",
                  run.checkpoint_root.c_str(), earlier.checkpoints.size(), earlier.checkpoints.size() == 1 ? "" : "s",
                  earlier.checkpoints[0].c_str());
    }
    if (run.leader) {
      std::string note;
      try {
        note = set_aside_earlier_metrics(earlier, plan.fresh);
      } catch (const UserError& e) {
        error = e.what();
      }
      if (!note.empty()) std::printf("%s\n", note.c_str());
    }
  }
  agree_on_error(run.world, error);
  return replace_earlier_run;
}

void open_checkpointer(TrainingRun& run, bool replace_earlier_run) {
  const config::CheckpointConfig& ckc = run.cfg.checkpoint();
  checkpoint::Policy policy{run.checkpoint_root, ckc.keep_last(), ckc.keep_every(), ckc.async(),
                            ckc.commit_timeout_s()};
  policy.replace_earlier_run = replace_earlier_run;
  run.faults = FaultPlan::from_environment(run.world.rank());
  if (!run.faults.empty()) {
    policy.halfway_hook = [save_faults = run.faults](int64_t step) mutable {
      if (save_faults.due(FaultKind::kKillInSave, static_cast<int>(step))) kill_this_process();
      if (save_faults.due(FaultKind::kFailSave, static_cast<int>(step))) {
        fail_user("writing the step", step, "checkpoint shard failed: an injected disk error (LOOM_FAULT)");
      }
    };
  }
  run.checkpointer = std::make_unique<checkpoint::Checkpointer>(policy, run.world);
}

// The GPU when train.device asks for one (DeviceRun::create says when: train.precision
// PRECISION_FP32 keeps a DEVICE_AUTO run on the CPU, the GPU trains in bf16).
void attach_gpu(TrainingRun& run) { run.device = DeviceRun::create(run.cfg, *run.grid, run.model_config, run.B, run.T); }

void make_whole_model(TrainingRun& run) {
  run.holds_whole = run.world.size() == 1 && run.chunks.size() == 1;
  if (run.leader && !run.holds_whole) {
    ModelParallel weights_only;
    weights_only.gradients = false;
    run.whole_copy = std::make_unique<GPT>(run.model_config, weights_only);
  }
  run.whole = run.holds_whole ? run.chunks[0].get() : run.whole_copy.get();
}

void open_data(TrainingRun& run) {
  if (run.task) return;
  run.open_token_run(run.start.has_loader ? run.start.loader : LoaderState{run.cfg.train().seed(), 0});
}

void print_run(const TrainingRun& run) {
  if (!run.leader) return;
  const config::ParallelConfig& pc = run.cfg.parallel();
  const config::TrainConfig& tc = run.cfg.train();
  const GPTConfig& mc = run.model_config;
  const int n_chunks = pc.virtual_stages();
  const Recompute recompute = static_cast<Recompute>(tc.recompute());
  const std::string kv_heads = mc.kv_heads() != mc.n_head ? " (" + std::to_string(mc.kv_heads()) + " key/value)" : "";
  std::printf("loom train: %s %d layers, %d heads%s, width %d, vocab %d, seq %d: %s parameters\n",
              mc.llama() ? "Llama" : "GPT", mc.n_layer, mc.n_head, kv_heads.c_str(), mc.n_embd, mc.vocab_size,
              mc.max_seq_len, format_count(static_cast<double>(run.whole->num_parameters())).c_str());
  std::string stages;
  for (int n : run.split) stages += (stages.empty() ? "" : ", ") + std::to_string(n);
  const std::string pipeline = n_chunks == 1 ? ", blocks per stage " + stages + ", 1F1B"
                                             : ", blocks per virtual stage " + stages + ", interleaved (" +
                                                   std::to_string(n_chunks) + " chunks per rank)";
  if (run.world.size() > 1) std::printf("launch: %s\n", current_launch().describe().c_str());
  std::printf("layout: %s%s, %d process%s x %d threads%s\n", run.grid->shape().str().c_str(),
              pc.sequence_parallel() ? " (sequence parallel)" : "", run.world.size(),
              run.world.size() == 1 ? "" : "es", run.threads, pc.pp() > 1 ? pipeline.c_str() : "");
  if (pc.pp() > 1) {
    std::printf("pipeline: %d micro-batches per step over %d stages: bubble %.1f%% of the step "
                "((pp - 1) / (%smicro-batches + pp - 1); raise train.grad_accum_steps%s to shrink it)\n",
                tc.grad_accum_steps(), pc.pp(),
                100.0 * parallel::pipeline_bubble_fraction(pc.pp(), n_chunks, tc.grad_accum_steps()),
                n_chunks == 1 ? "" : "chunks x ", n_chunks == 1 ? " or parallel.virtual_stages" : "");
  }
  // Activations of one micro-batch on this rank (all its chunks); a pipeline rank holds several.
  double kept = 0, all = 0;
  for (const auto& chunk : run.chunks) {
    kept += static_cast<double>(chunk->activation_bytes(recompute, run.B, run.T)) / (1 << 20);
    all += static_cast<double>(chunk->activation_bytes(Recompute::kNone, run.B, run.T)) / (1 << 20);
  }
  if (run.device) std::printf("device: %s\n", run.device->describe().c_str());
  if (!run.device && run.cpu_backend->precision() == Precision::kBF16) {
    std::printf("precision: bf16 mixed precision emulated on the CPU (f32 master weights; train.precision)\n");
  }
  std::printf("activations: %.1f MiB per rank", kept);
  if (recompute != Recompute::kNone) {
    std::printf(" (recompute %s saves %.1f MiB of %.1f)", recompute == Recompute::kFull ? "full" : "selective",
                all - kept, all);
  }
  std::printf("\n");
  std::printf("memory: estimated %s; this host has %s available\n", run.memory.describe().c_str(),
              run.host_available > 0 ? format_bytes(static_cast<uint64_t>(run.host_available)).c_str()
                                     : "an unknown amount");
  const std::string lengths = run.task && run.task->min_digits() < run.task->digits()
                                  ? std::to_string(run.task->min_digits()) + " to " + std::to_string(run.task->digits())
                                  : std::to_string(run.task ? run.task->digits() : 0);
  const std::string data = run.task ? str_cat(lengths + "-digit addition,", run.task->test_problems().size(),
                                              "held-out problems")
                                    : run.token_run->describe();
  std::printf("data: %s; batch %d x %d replicas x %d accumulation, %d steps\n", data.c_str(), run.B, run.replicas,
              run.accum, run.steps);
  if (run.token_run && !run.token_run->packing_line().empty()) {
    std::printf("%s\n", run.token_run->packing_line().c_str());
  }
  std::fflush(stdout);
}

// Metrics (rank 0 reports; docs/metrics.md). MFU's denominator: metrics.peak_tflops per process,
// or on CPU the sgemm rate of every host's cores, measured by one rank per host on all the cores it
// may run on while the others wait (ranks sharing cores must not count them twice, nor slow each
// other's measurement), summed over the hosts.
void open_metrics(TrainingRun& run) {
  const config::MetricsConfig& mc = run.cfg.metrics();
  // On GPUs without metrics.peak_tflops: 989 TFLOP/s each, the dense bf16 rate of an H100/H200 SXM.
  const double peak_tflops = mc.peak_tflops() > 0 ? mc.peak_tflops() : run.device ? 989.0 : 0.0;
  double peak_flops = 1e12 * peak_tflops * run.world.size();
  if (peak_flops == 0) {
    const LaunchInfo& launch = current_launch();
    if (run.world.size() > 1) run.world.barrier();
    float mine = launch.local_rank == 0 ? static_cast<float>(measure_cpu_peak_flops(launch.cpus)) : 0.0f;
    if (run.world.size() > 1) run.world.all_reduce(&mine, &mine, 1, DType::kF32, parallel::ReduceOp::kSum);
    peak_flops = mine;
  }
  run.mfu_meter = std::make_unique<MfuMeter>(peak_flops, peak_tflops == 0);
  std::string error;
  if (run.leader) {
    // Under mpirun a rank's stdout is a pseudo-terminal even when mpirun writes to a file: only a
    // process started on its own knows that it writes to a terminal.
    const bool standalone = current_launch().launcher == Launcher::kStandalone;
    try {
      run.metrics = std::make_unique<MetricsLog>(metrics_path(run.cfg), mc.progress_bar() && standalone, stdout,
                                                 tensorboard_dir(run.cfg));
    } catch (const UserError& e) {
      error = e.what();
    }
  }
  // Rank 0 alone opens the file: every rank stops if it cannot (none left waiting for rank 0).
  agree_on_error(run.world, error);
  if (!run.leader) return;
  run.flops_per_token = model_flops_per_token(run.model_config, run.whole->num_parameters(), run.T);
  std::printf("metrics: %.3g model FLOPs per token; MFU against %s = %.3g GFLOP/s%s%s%s%s\n", run.flops_per_token,
              mc.peak_tflops() > 0 ? "metrics.peak_tflops x processes"
              : run.device         ? "989 TFLOP/s (dense bf16, H100/H200 SXM) x GPUs"
                                   : "the measured sgemm rate of the hosts' cores (raised to training's if higher)",
              peak_flops / 1e9, run.metrics->jsonl_path().empty() ? "" : "; JSON lines to ",
              run.metrics->jsonl_path().c_str(), run.metrics->tensorboard_path().empty() ? "" : "; TensorBoard events to ",
              run.metrics->tensorboard_path().c_str());
  std::fflush(stdout);
  if (!run.resume_message.empty()) run.metrics->event(static_cast<int>(run.start.step), "resume", run.resume_message);
}

}  // namespace

TrainingRun::TrainingRun(config::RunConfig resolved, parallel::Communicator& world_communicator)
    : cfg(std::move(resolved)), world(world_communicator), leader(world_communicator.rank() == 0) {}

uint64_t TrainingRun::peak_memory_bytes() const { return device ? device->peak_bytes() : peak_rss_bytes(); }

void TrainingRun::assemble_whole() {
  if (!holds_whole) assemble_whole_model(chunk_ptrs, *grid, split, whole);
}

void TrainingRun::open_token_run(const LoaderState& start_at) {
  token_run = std::make_unique<TokenRun>(cfg, BatchLayout{T, B, accum, replicas, grid->coord().dp}, start_at, world);
}

checkpoint::Resumed TrainingRun::resume(const std::string& spec) {
  return checkpoint::resume(spec, checkpoint_root, cfg, world, chunk_ptrs, optimizer_ptrs, print_warning);
}

std::unique_ptr<TrainingRun> build_training_run(config::RunConfig cfg, const TrainOptions& options,
                                                parallel::Communicator& world) {
  auto run = std::make_unique<TrainingRun>(std::move(cfg), world);
  set_up_layout(*run);
  check_memory(*run);
  attach_gpu(*run);
  build_model(*run);
  run->checkpoint_root = checkpoint_root(run->cfg);
  const EarlierRun earlier = find_earlier_run(run->cfg);
  const StartPlan plan = plan_start(options.resume, options.fresh, earlier, options.init_from);
  const bool resumed = resume_from_checkpoint(*run, plan.resume_spec, options);
  if (!plan.init_from.empty()) init_from_model(*run, plan.init_from);
  make_output_directories(*run);
  open_checkpointer(*run, set_aside_earlier_run(*run, plan, earlier, resumed));
  make_whole_model(*run);
  open_data(*run);
  print_run(*run);
  open_metrics(*run);
  return run;
}

}  // namespace loom
