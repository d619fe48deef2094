// A `loom train` run before its first step: everything the training loop (launch/training_loop.h)
// works on, built from the resolved config by build_training_run in named steps, each collective
// over the world where it must be (every rank takes every step, and a user error found by any
// rank stops all of them before the first step):
//
//   set up the layout     the collective deadline, the process grid, threads, the addition task,
//                         the model's shape and its split over the pipeline stages
//   check the memory      the run's estimate against what the host has
//   attach the GPU        the GPU, its backend and device groups when the run trains there
//                         (train.device)
//   build the model       this rank's model chunks, each with its AdamW, on the GPU or the CPU
//   resume or start       the checkpoint to continue from (--resume, --fresh), the output
//                         directories, an earlier run's metrics set aside
//   open the checkpointer the save policy, with the faults injected into saves
//   make the whole model  rank 0's copy of the whole model, assembled from the shards
//   open the data         token shards (the addition task generates its batches itself)
//   print the run         model, layout, device, activations, memory, data
//   open the metrics      MFU's peak, the metrics files (rank 0)
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "checkpoints/checkpoint.h"
#include "core/backend/cpu_backend.h"
#include "core/config.h"
#include "core/gpt.h"
#include "core/optimizer.h"
#include "data/addition.h"
#include "launch/fault_injection.h"
#include "launch/device_run.h"
#include "launch/memory_plan.h"
#include "launch/metrics.h"
#include "launch/stop_request.h"
#include "launch/token_run.h"
#include "parallel/communicator.h"
#include "parallel/process_grid.h"

namespace loom {

// What the flags of `loom train` ask for (train_flags(), launch/commands.h), checked.
struct TrainOptions {
  std::string config_path;             // "" for the built-in demo
  std::vector<std::string> overrides;  // --set FIELD=VALUE, in order
  std::string resume;                  // --resume: auto, a directory or none; "" when not given
  bool fresh = false;                  // --fresh
  std::string init_from;               // --init-from: the model whose weights a new run starts from
  int stop_after_steps = 0;            // --stop-after-steps; 0: no limit
  TimeBudget budget;                   // --time-budget; none when not given
};

struct TrainingRun {
  TrainingRun(config::RunConfig resolved, parallel::Communicator& world_communicator);
  TrainingRun(const TrainingRun&) = delete;
  TrainingRun& operator=(const TrainingRun&) = delete;

  config::RunConfig cfg;
  parallel::Communicator& world;
  bool leader;  // world rank 0: prints, reports and holds the whole model

  // The layout and the shape of a step.
  std::unique_ptr<parallel::ProcessGrid> grid;
  int threads = 0;
  GPTConfig model_config;
  std::vector<int> split;  // blocks per virtual stage
  MemoryEstimate memory;
  int64_t host_available = 0;  // bytes; 0 where unknown
  int B = 0, T = 0, accum = 0;  // micro-batch rows per replica, sequence length, micro-batches per step
  int replicas = 0, global_B = 0;  // data-parallel replicas; rows of a micro-batch over all of them
  int steps = 0;                   // train.steps

  // The data: the built-in addition task, or token shards from `loom prepare`.
  std::optional<AdditionTask> task;
  std::unique_ptr<TokenRun> token_run;

  // The GPU when the run trains there (train.device), else null: its backend and the device
  // groups the model and optimizers use. Declared before them: they go first.
  std::unique_ptr<DeviceRun> device;
  // This rank's model chunks (one unless the pipeline is interleaved), each with its optimizer,
  // on the GPU's backend (bf16) or the CPU backend (fp32, or bf16 mixed precision when
  // train.precision says so).
  std::unique_ptr<CpuBackend> cpu_backend;
  std::vector<std::unique_ptr<GPT>> chunks;
  std::vector<std::unique_ptr<AdamW>> optimizers;
  std::vector<GPT*> chunk_ptrs;
  std::vector<AdamW*> optimizer_ptrs;

  // Rank 0's whole model (null elsewhere): in one process that holds it all, the training model
  // itself; else a copy without gradients, assembled from the shards when needed.
  bool holds_whole = false;
  std::unique_ptr<GPT> whole_copy;
  GPT* whole = nullptr;

  // Where the run starts and where it saves.
  std::string checkpoint_root;
  checkpoint::Progress start;  // the resumed checkpoint's progress, or none
  std::string resumed_dir;     // "" when the run did not resume
  std::string resume_message;  // the line printed for a resume or an --init-from ("" when none)
  FaultPlan faults;            // LOOM_FAULT's entries for this rank
  std::unique_ptr<checkpoint::Checkpointer> checkpointer;

  // Reporting (rank 0's metrics files; MFU on every rank, which all measure the peak).
  std::unique_ptr<MfuMeter> mfu_meter;
  std::unique_ptr<MetricsLog> metrics;  // rank 0 only
  double flops_per_token = 0;           // rank 0 only

  // This rank's peak memory in bytes: the GPU's when the run trains there, else the process's
  // resident set.
  uint64_t peak_memory_bytes() const;
  // The whole model on rank 0 from the model's shards (nothing when this one process holds
  // it all). Collective over the world.
  void assemble_whole();
  // Token runs: the loader, starting at `start` (collective over the world).
  void open_token_run(const LoaderState& start);
  // checkpoint::resume of `spec` into the chunks and optimizers, warnings to stderr. Collective.
  checkpoint::Resumed resume(const std::string& spec);
};

// Builds the run `cfg` describes (resolved by resolve_run_config) on this rank. Collective over
// `world`; UserError (the same on every rank) for a run that cannot start.
std::unique_ptr<TrainingRun> build_training_run(config::RunConfig cfg, const TrainOptions& options,
                                                parallel::Communicator& world);

}  // namespace loom
