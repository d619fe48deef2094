// The training loop of `loom train`, over a run built by build_training_run
// (launch/training_run.h). Each step, on every rank alike:
//
//   step()        the step's batch, one optimizer step (the faults of LOOM_FAULT injected as it
//                 starts: launch/fault_injection.h)
//   the guard     a step whose loss or gradient norm is not finite is skipped; guard.rollback_after
//                 of them in a row roll_back() to the last checkpoint (guard.max_rollbacks at most)
//   report()      rank 0's progress line and metrics every train.log_every steps, the progress bar
//   stop          a signal on any rank or rank 0's time budget: every rank saves and stops after
//                 this same step (launch/stop_request.h)
//   checkpoint()  every checkpoint.every steps, at --stop-after-steps and at the last step
//   evaluate()    every train.eval_every steps and at the last: held-out accuracy (the addition
//                 task, on rank 0's whole model) or the validation loss (token shards); and the
//                 tasks of train.eval_task at theirs (launch/eval_runner.h)
//
// Every decision that is collective (the guard, a stop, a save) depends only on what every rank
// sees alike: the step number, the global loss and gradient norm, the agreed stop.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "checkpoints/checkpoint.h"
#include "core/train_step.h"
#include "launch/eval_runner.h"
#include "launch/metrics.h"
#include "launch/stop_request.h"
#include "launch/training_run.h"

namespace loom {

// How the loop ended.
enum class LoopEnd {
  kFinished,  // train.steps are done: rank 0's whole model is up to date
  kPaused,    // --stop-after-steps: saved; the run continues with --resume auto (exit 0)
  kStopped,   // a signal or the time budget: saved unless the last steps were not finite (exit 75)
};

// train.eval_task's tasks, their files read and checked (UserError FILE:LINE for a bad line, or
// two tasks of one name): `loom train` reads them before it builds the run, so that a bad file
// stops it before anything is written. Every rank reads the same files and fails alike.
std::vector<EvalTask> read_eval_tasks(const config::RunConfig& cfg);

class TrainingLoop {
 public:
  // `signals` is read after each step; `run` is the loop's to change (its model, optimizers,
  // loader, metrics) until run() returns. `eval_tasks`: read_eval_tasks(run.cfg).
  TrainingLoop(TrainingRun& run, const TrainOptions& options, const SignalStop& signals,
               std::vector<EvalTask> eval_tasks = {});
  TrainingLoop(const TrainingLoop&) = delete;
  TrainingLoop& operator=(const TrainingLoop&) = delete;

  // Trains from where the run starts to train.steps, or until --stop-after-steps or a stop.
  // Collective over the world.
  LoopEnd run();

 private:
  using Clock = std::chrono::steady_clock;

  // The text codec the tasks need (the run's tokenizer, or the addition task's alphabet).
  void open_eval_codec();
  // Step done_ + 1 at learning rate `lr`: its batch, its update. Collective like train_step.
  StepResult step(float lr);
  // This rank's micro-batches of step done_ + 1.
  std::span<const MicroBatch> next_batch();
  // The guard on a step's result: counts a non-finite step (a UserError when the guard is off)
  // and says whether the run must roll back now.
  bool rollback_due(const StepResult& result);
  // Reloads the last checkpoint after `failed_step` and continues from it (UserError when there
  // is none or the rollbacks are used up). Collective.
  void roll_back(int failed_step);
  // After step done_: the progress line and metrics at a log step (the memory peak agreed over
  // the world, a collective), the progress bar.
  void report(const StepResult& result, float lr);
  // Whether any rank has a reason to stop after step done_ (never after the last). Collective.
  StopDecision stop_requested();
  // Saves (when the last steps were finite) and waits for the commit. Collective.
  LoopEnd stop(const StopDecision& decision);
  bool checkpoint_due() const;
  // Saves the state after done_ steps; `final`: nothing changes the state after it, so it is
  // written straight from the model and optimizer, without a host copy. Collective.
  void checkpoint(bool final);
  bool evaluation_due() const;
  bool held_out_due() const;          // every train.eval_every steps and at the last
  bool task_due(size_t task) const;   // train.eval_task[task]'s evaluation after step done_
  // Collective (the validation loss runs the model on every rank; the addition task's accuracy
  // needs the whole model assembled on rank 0).
  void evaluate();
  void evaluate_held_out();
  // The tasks due after step done_, into one eval record. Collective like evaluate().
  void evaluate_tasks();
  // After the last step: the final save committed, the whole model assembled. Collective.
  LoopEnd finish();
  // Waits for the save in flight (rank 0: until it is committed), then agrees over the world: a
  // save that failed on any rank stops every rank with its message, rather than leave the others
  // waiting for that rank. Collective.
  void wait_for_save();
  // Rank 0 prints `line` (clearing the progress bar) and records it as event `name` (none: "").
  void log_event(int at_step, const std::string& name, const std::string& line);

  TrainingRun& run_;
  const SignalStop& signals_;
  TimeBudget time_budget_;
  int first_step_;  // the steps done when this process started
  int end_step_;    // where this process stops: train.steps, or --stop-after-steps after first_step_
  int done_;        // steps done
  const uint64_t tokens_per_step_;

  checkpoint::Progress progress_;  // as of the last save (or the resumed checkpoint)
  int saved_step_;                 // the step of progress_
  std::string rollback_dir_;       // the checkpoint this run resumed from or last saved; "": none

  int bad_in_a_row_ = 0;  // non-finite steps in a row
  int rollbacks_ = 0;

  // The steps since the last progress line: their losses and wall-clock time.
  EtaClock eta_;
  Clock::time_point window_start_;
  double window_loss_ = 0;
  int window_steps_ = 0;

  // train.eval_task (read_eval_tasks), their schedules, and the text codec of the run's data.
  std::vector<EvalTask> eval_tasks_;
  std::vector<int> eval_task_every_;  // 0: with the held-out evaluation
  std::unique_ptr<TextCodec> eval_codec_;

  // The addition task's micro-batches: every replica's rows, generated each step; this rank's
  // rows of each are its micro-batches.
  std::vector<std::vector<int32_t>> tokens_, targets_;
  std::vector<MicroBatch> addition_micro_;
};

}  // namespace loom
