#include "launch/training_loop.h"

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <limits>
#include <memory>
#include <utility>

#include "core/optimizer.h"
#include "launch/evaluation.h"
#include "launch/fault_injection.h"
#include "launch/launch_env.h"
#include "parallel/solo_communicator.h"

namespace loom {
namespace {

// LOOM_FAULT=nan@N (launch/fault_injection.h): one weight of this rank is NaN for one step and
// restored after it, so that step's loss and gradients are not finite on every rank, as a real
// numerical fault would make them. A LayerNorm weight, which every token passes through; written
// through the model's backend (the weights may live on a GPU).
class PoisonedWeight {
 public:
  explicit PoisonedWeight(GPT& chunk) : backend_(chunk.backend()) {
    for (Parameter& p : chunk.parameters()) {
      if (p.value.numel() == 0) continue;
      if (!target_.raw() || p.name.find("ln") != std::string::npos) {
        target_ = Tensor::view(p.value.raw(), {1}, DType::kF32, p.value.device());
      }
      if (p.name.find("ln") != std::string::npos) break;
    }
    if (!target_.raw()) return;
    backend_.to_host(&kept_, target_);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    backend_.from_host(target_, &nan);
  }
  ~PoisonedWeight() {
    if (target_.raw()) backend_.from_host(target_, &kept_);
  }
  PoisonedWeight(const PoisonedWeight&) = delete;
  PoisonedWeight& operator=(const PoisonedWeight&) = delete;

 private:
  Backend& backend_;
  Tensor target_;  // one element of the master weights
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

}  // namespace

TrainingLoop::TrainingLoop(TrainingRun& run, const TrainOptions& options, const SignalStop& signals,
                           std::vector<EvalTask> eval_tasks)
    : run_(run),
      signals_(signals),
      time_budget_(options.budget),
      first_step_(static_cast<int>(std::min<int64_t>(run.start.step, run.steps))),
      end_step_(options.stop_after_steps > 0 ? std::min(run.steps, first_step_ + options.stop_after_steps)
                                             : run.steps),
      done_(first_step_),
      tokens_per_step_(static_cast<uint64_t>(run.global_B) * static_cast<uint64_t>(run.T) *
                       static_cast<uint64_t>(run.accum)),
      progress_(run.start),
      saved_step_(first_step_),
      rollback_dir_(run.resumed_dir),
      eta_(first_step_),
      window_start_(Clock::now()),
      eval_tasks_(std::move(eval_tasks)) {
  const size_t rows = run.task ? static_cast<size_t>(run.global_B) * run.T : 0;
  tokens_.assign(static_cast<size_t>(run.accum), std::vector<int32_t>(rows));
  targets_ = tokens_;
  addition_micro_.resize(static_cast<size_t>(run.accum));
  open_eval_codec();
}

std::vector<EvalTask> read_eval_tasks(const config::RunConfig& cfg) {
  const config::TrainConfig& tc = cfg.train();
  std::vector<EvalTask> tasks;
  for (int i = 0; i < tc.eval_task_size(); ++i) {
    const config::EvalTask& e = tc.eval_task(i);
    EvalTask::Kind kind = EvalTask::Kind::kLoss;
    if (e.kind() == config::EvalTask::MULTIPLE_CHOICE) kind = EvalTask::Kind::kMultipleChoice;
    if (e.kind() == config::EvalTask::EXACT_MATCH) kind = EvalTask::Kind::kExactMatch;
    tasks.push_back(load_eval_task(kind, e.path(), e.limit(), e.has_delimiter() ? e.delimiter() : " "));
    if (e.has_name()) tasks.back().name = e.name();
    for (size_t j = 0; j + 1 < tasks.size(); ++j) {
      if (tasks[j].name == tasks.back().name) {
        fail_user("train.eval_task[" + std::to_string(j) + "] and [" + std::to_string(i) + "] are both named",
                  "'" + tasks.back().name + "'; set train.eval_task.name to tell their metrics apart");
      }
    }
  }
  return tasks;
}

// The text codec of tasks that need one: the addition task's alphabet, or the run's tokenizer.
void TrainingLoop::open_eval_codec() {
  for (size_t i = 0; i < eval_tasks_.size(); ++i) {
    eval_task_every_.push_back(run_.cfg.train().eval_task(static_cast<int>(i)).every());
    if (eval_tasks_[i].kind == EvalTask::Kind::kLoss || eval_codec_) continue;
    if (run_.task) {
      eval_codec_ = std::make_unique<TextCodec>(addition_codec(*run_.task));
      continue;
    }
    const std::string path = tokenizer_path_of(run_.cfg.data().tokens());
    if (path.empty()) {
      fail_user("train.eval_task[" + std::to_string(i) + "] (" + eval_tasks_[i].source + ") needs the run's tokenizer;",
                "set data.tokens.tokenizer");
    }
    std::shared_ptr<const Tokenizer> tokenizer = load_tokenizer(path);
    if (tokenizer->vocab_size() > run_.model_config.vocab_size) {
      fail_user("the tokenizer", path, "has", tokenizer->vocab_size(), "tokens but the model only",
                run_.model_config.vocab_size, "; set data.tokens.tokenizer to the data's tokenizer");
    }
    eval_codec_ = std::make_unique<TextCodec>(tokenizer_codec(tokenizer, path));
  }
}

LoopEnd TrainingLoop::run() {
  const config::OptimizerConfig& oc = run_.cfg.optimizer();
  while (done_ < end_step_) {
    const auto step_start = Clock::now();
    const float lr = lr_at_step(done_, run_.steps, oc.lr(), oc.warmup_steps(), oc.min_lr_ratio());
    const StepResult result = step(lr);
    if (rollback_due(result)) {
      roll_back(done_ + 1);
      continue;
    }
    ++done_;
    if (result.updated) {
      window_loss_ += result.loss;
      ++window_steps_;
    }
    time_budget_.record_step(std::chrono::duration<double>(Clock::now() - step_start).count());
    report(result, lr);
    const StopDecision stop_decision = stop_requested();
    if (stop_decision.stop()) return stop(stop_decision);
    if (checkpoint_due()) {
      checkpoint(/*final=*/done_ == run_.steps || done_ == end_step_);
      time_budget_.record_save(run_.checkpointer->last_save_seconds());
    }
    if (evaluation_due()) evaluate();
  }
  return finish();
}

StepResult TrainingLoop::step(float lr) {
  const int number = done_ + 1;  // steps count from 1 in LOOM_FAULT and in every message
  FaultPlan& faults = run_.faults;
  if (faults.due(FaultKind::kHang, number)) hang_this_process();
  if (faults.due(FaultKind::kKill, number)) kill_this_process();
  if (faults.due(FaultKind::kSignal, number)) std::raise(SIGUSR1);
  if (faults.due(FaultKind::kUserError, number)) {
    fail_user("LOOM_FAULT: an injected user error on this rank alone at step", number);
  }
  const std::span<const MicroBatch> micro = next_batch();
  std::unique_ptr<PoisonedWeight> poisoned;
  const bool poison = faults.due(FaultKind::kNan, number);
  // The step's update is skipped everywhere (its gradient norm is not finite), so restoring the
  // weight afterwards leaves the weights as they were before the step.
  if (poison) poisoned = std::make_unique<PoisonedWeight>(*run_.chunks[0]);
  const StepResult result = train_step(run_.chunk_ptrs, run_.optimizer_ptrs, micro, lr);
  poisoned.reset();
  return result;
}

// The addition task generates every replica's rows of a micro-batch; token shards come from the
// loader, which reads only this rank's rows.
std::span<const MicroBatch> TrainingLoop::next_batch() {
  if (!run_.task) return run_.token_run->next_step();
  const size_t my_rows = static_cast<size_t>(run_.grid->coord().dp) * run_.B * run_.T;
  for (int i = 0; i < run_.accum; ++i) {
    const size_t m = static_cast<size_t>(i);
    run_.task->train_batch(static_cast<uint64_t>(done_) * run_.accum + i, run_.global_B, tokens_[m].data(),
                           targets_[m].data());
    addition_micro_[m] = MicroBatch{tokens_[m].data() + my_rows, targets_[m].data() + my_rows, run_.B, run_.T};
  }
  return addition_micro_;
}

// Every rank sees the same global loss and gradient norm, so every rank decides alike.
bool TrainingLoop::rollback_due(const StepResult& result) {
  if (result.updated) {
    bad_in_a_row_ = 0;
    return false;
  }
  const config::GuardConfig& guard = run_.cfg.guard();
  const int number = done_ + 1;
  if (guard.rollback_after() == 0) {
    fail_user("the loss became", result.loss, "(gradient norm", result.grad_norm, ") at step", number,
              "(lower optimizer.lr or raise optimizer.warmup_steps; guard.rollback_after > 0 skips such steps)");
  }
  ++bad_in_a_row_;
  log_event(number, "skip",
            text_printf("guard: step %d: loss %g, gradient norm %g: update skipped (%d in a row; a rollback after %d)",
                        number, result.loss, result.grad_norm, bad_in_a_row_, guard.rollback_after()));
  return bad_in_a_row_ >= guard.rollback_after();
}

void TrainingLoop::roll_back(int failed_step) {
  const config::GuardConfig& guard = run_.cfg.guard();
  if (rollback_dir_.empty()) {
    fail_user(bad_in_a_row_, "steps in a row had a non-finite loss or gradient norm (the last at step", failed_step,
              ") and there is no checkpoint to roll back to; set checkpoint.every, or lower optimizer.lr");
  }
  if (++rollbacks_ > guard.max_rollbacks()) {
    fail_user("the loss or gradient norm is still not finite at step", failed_step, "after", guard.max_rollbacks(),
              "rollbacks (guard.max_rollbacks): the fault is in the data or the settings, not transient;"
              " lower optimizer.lr or raise optimizer.warmup_steps");
  }
  wait_for_save();  // collective, and rank 0 enters it once the checkpoint is committed
  const checkpoint::Resumed back = run_.resume(rollback_dir_);
  progress_ = back.progress;
  saved_step_ = static_cast<int>(progress_.step);
  if (run_.token_run) run_.open_token_run(progress_.loader);
  log_event(static_cast<int>(progress_.step), "rollback",
            text_printf("guard: %d non-finite steps in a row: rolled back to %s (step %lld), rollback %d of at most %d",
                        bad_in_a_row_, back.dir.c_str(), static_cast<long long>(progress_.step), rollbacks_,
                        guard.max_rollbacks()));
  eta_ = EtaClock(static_cast<int>(progress_.step));
  bad_in_a_row_ = 0;
  window_loss_ = 0;
  window_steps_ = 0;
  window_start_ = Clock::now();
  done_ = static_cast<int>(progress_.step);
}

void TrainingLoop::report(const StepResult& result, float lr) {
  const bool last = done_ == run_.steps;
  const bool log_step = done_ % run_.cfg.train().log_every() == 0 || last;
  // Memory: the largest peak over the ranks, in MiB (every rank takes part at a log step).
  int32_t peak_mib = 0;
  if (log_step) {
    peak_mib = static_cast<int32_t>(run_.peak_memory_bytes() >> 20);
    if (run_.world.size() > 1) run_.world.all_reduce(&peak_mib, &peak_mib, 1, DType::kI32, parallel::ReduceOp::kMax);
  }
  MetricsLog* const metrics = run_.metrics.get();
  if (metrics && log_step && window_steps_ > 0) {
    const double seconds = std::chrono::duration<double>(Clock::now() - window_start_).count();
    TrainMetrics m;
    m.step = done_;
    m.steps = run_.steps;
    m.loss = window_loss_ / window_steps_;
    m.lr = lr;
    m.grad_norm = result.grad_norm;
    m.tokens_per_s = window_steps_ * static_cast<double>(run_.global_B) * run_.T * run_.accum / seconds;
    m.mfu = run_.mfu_meter->mfu(m.tokens_per_s * run_.flops_per_token);
    m.mem_bytes = static_cast<uint64_t>(peak_mib) << 20;
    m.eta_s = eta_.eta_s(done_, run_.steps);
    m.step_ms = 1e3 * seconds / window_steps_;
    metrics->progress(m);
  }
  if (metrics) metrics->tick(done_, run_.steps, eta_.eta_s(done_, run_.steps));
  if (log_step) {
    window_loss_ = 0;
    window_steps_ = 0;
    window_start_ = Clock::now();
  }
}

// Every rank learns whether any rank was signalled (or rank 0's budget ran out) after this same
// step, so all stop together.
StopDecision TrainingLoop::stop_requested() {
  if (done_ == run_.steps) return StopDecision{};
  StopReason local = signals_.received();
  if (run_.leader && local == StopReason::kNone && time_budget_.exhausted(Clock::now())) {
    local = StopReason::kTimeBudget;
  }
  return agree_on_stop(run_.world, local);
}

// A step inside a run of non-finite ones is not a state to come back to: no checkpoint of it (the
// last one stays the rollback point, and the one a stopped run resumes from).
LoopEnd TrainingLoop::stop(const StopDecision& decision) {
  const bool healthy = bad_in_a_row_ == 0;
  if (healthy) checkpoint(/*final=*/true);
  // Collective, and rank 0 enters it once the checkpoint is committed: mpirun ends the job as soon
  // as one rank exits non-zero, so none may leave before the commit.
  wait_for_save();
  log_event(done_, "stop",
            healthy ? text_printf("stopping: %s on rank %d: finished step %d of %d, checkpoint %s committed; exit %d "
                                  "(resume with --resume auto)",
                                  stop_reason_name(decision.reason), decision.rank, done_, run_.steps,
                                  run_.checkpointer->last_committed().c_str(), kExitResumable)
                    : text_printf("stopping: %s on rank %d after step %d of %d, not saved (the last steps were not "
                                  "finite): --resume auto goes back to %s; exit %d",
                                  stop_reason_name(decision.reason), decision.rank, done_, run_.steps,
                                  rollback_dir_.empty() ? "the start" : rollback_dir_.c_str(), kExitResumable));
  return LoopEnd::kStopped;
}

bool TrainingLoop::checkpoint_due() const {
  const int every = run_.cfg.checkpoint().every();
  const bool healthy = bad_in_a_row_ == 0;  // see stop()
  return done_ == run_.steps || done_ == end_step_ || (healthy && every > 0 && done_ % every == 0);
}

void TrainingLoop::checkpoint(bool final) {
  progress_.step = done_;
  progress_.tokens_seen += tokens_per_step_ * static_cast<uint64_t>(done_ - saved_step_);
  saved_step_ = done_;
  progress_.has_loader = run_.token_run != nullptr;
  if (run_.token_run) progress_.loader = run_.token_run->state();
  wait_for_save();
  checkpoint::Checkpointer& checkpointer = *run_.checkpointer;
  checkpointer.save(run_.cfg, progress_, run_.chunk_ptrs, run_.optimizer_ptrs, "loom train", final);
  rollback_dir_ = run_.checkpoint_root + "/" + checkpoint::step_dir_name(done_);
  log_event(done_, "checkpoint",
            text_printf("checkpoint %5d/%d | %s/%s | training held %.0f ms (host copy %.0f ms)%s", done_, run_.steps,
                        run_.checkpoint_root.c_str(), checkpoint::step_dir_name(done_).c_str(),
                        1e3 * checkpointer.last_blocked_seconds(), 1e3 * checkpointer.last_copy_seconds(),
                        run_.cfg.checkpoint().async() ? ", writing in the background" : ""));
}

bool TrainingLoop::held_out_due() const {
  const int every = run_.cfg.train().eval_every();
  return (every > 0 && done_ % every == 0) || done_ == run_.steps;
}

bool TrainingLoop::task_due(size_t task) const {
  const int every = eval_task_every_[task];
  return every > 0 ? done_ % every == 0 || done_ == run_.steps : held_out_due();
}

bool TrainingLoop::evaluation_due() const {
  for (size_t i = 0; i < eval_tasks_.size(); ++i) {
    if (task_due(i)) return true;
  }
  return held_out_due();
}

void TrainingLoop::evaluate() {
  const auto eval_start = Clock::now();
  if (held_out_due()) evaluate_held_out();
  evaluate_tasks();
  // Evaluation time does not count as training throughput: the window starts that much later.
  window_start_ += Clock::now() - eval_start;
}

void TrainingLoop::evaluate_held_out() {
  const bool last = done_ == run_.steps;
  if (run_.task) {
    run_.assemble_whole();
    if (run_.leader) {
      const AdditionTask& task = *run_.task;
      const AdditionScores scores = addition_scores(*run_.whole, task, task.test_problems());
      std::string line = text_printf("eval  %5d/%d | held-out exact match %.1f%% (%d problems) | loss %.4f", done_,
                                     run_.steps, 100.0 * scores.accuracy,
                                     static_cast<int>(task.test_problems().size()), scores.loss);
      std::vector<std::pair<std::string, double>> values = {{"accuracy", scores.accuracy}, {"val_loss", scores.loss}};
      if (scores.lengths.size() > 1) {
        line += " |";
        for (const AdditionScores::Length& l : scores.lengths) {
          line += text_printf(" %dd %.1f%%", l.digits, 100.0 * l.accuracy);
          values.emplace_back("accuracy_" + std::to_string(l.digits) + "d", l.accuracy);
        }
      }
      log_event(done_, "", line);
      run_.metrics->eval(done_, values);
    }
  } else {
    double val_loss = 0;
    auto evaluate_batch = [this](std::span<const MicroBatch> val_micro) {
      // Over the optimizers' data-parallel group: the device's on a GPU.
      return evaluate_loss(run_.chunk_ptrs, run_.optimizer_ptrs[0]->dp(), val_micro);
    };
    if (run_.token_run->validation_loss(evaluate_batch, &val_loss) && run_.leader) {
      log_event(done_, "", text_printf("eval  %5d/%d | validation loss %.4f | perplexity %.2f", done_, run_.steps,
                                       val_loss, std::exp(val_loss)));
      run_.metrics->eval(done_, {{"val_loss", val_loss}, {"perplexity", std::exp(val_loss)}});
    }
    if (last) {
      run_.assemble_whole();
    }
  }
}

void TrainingLoop::evaluate_tasks() {
  std::vector<std::pair<std::string, double>> values;
  std::string line;
  bool assembled = false;
  for (size_t i = 0; i < eval_tasks_.size(); ++i) {
    if (!task_due(i)) continue;
    const EvalTask& task = eval_tasks_[i];
    if (task.generative() && !assembled) {
      run_.assemble_whole();  // collective; the decoding is rank 0's alone, the others go on
      assembled = true;
    }
    parallel::SoloCommunicator rank_zero("decoders");
    EvalModels models;
    // The training shape: the model's activations are sized for it.
    models.layout = LayoutModel{run_.chunk_ptrs, &run_.grid->dp(), run_.B, /*fixed_shape=*/true};
    models.whole = run_.leader ? run_.whole : nullptr;
    models.decoders = &rank_zero;
    models.codec = eval_codec_.get();
    const TaskReport report = run_eval_task(task, models);
    if (!run_.leader) continue;
    line += " | " + task.name;
    for (const auto& [key, value] : report.values) {
      values.push_back({task.name + "/" + key, value});
      if (key.find("stderr") == std::string::npos && key != "tokens") line += text_printf(" %s %.4f", key.c_str(), value);
    }
  }
  if (!run_.leader || values.empty()) return;
  log_event(done_, "", text_printf("eval  %5d/%d", done_, run_.steps) + line);
  run_.metrics->eval(done_, values);
}

LoopEnd TrainingLoop::finish() {
  if (run_.metrics) run_.metrics->clear_bar();
  wait_for_save();
  if (run_.leader && !run_.checkpointer->last_committed().empty()) {
    std::printf("checkpoint saved: %s\n", run_.checkpointer->last_committed().c_str());
  }
  if (end_step_ < run_.steps) {
    if (run_.leader) {
      std::printf("stopped after step %d of %d (--stop-after-steps); continue with --resume auto\n", end_step_,
                  run_.steps);
    }
    return LoopEnd::kPaused;
  }
  if (first_step_ == run_.steps) {
    if (run_.leader) {
      std::printf("the checkpoint is at step %d of train.steps = %d: nothing left to train\n", first_step_, run_.steps);
    }
    run_.assemble_whole();
  }
  return LoopEnd::kFinished;
}

void TrainingLoop::wait_for_save() {
  std::string error;
  try {
    run_.checkpointer->wait();
  } catch (const UserError& e) {
    error = e.what();
  }
  agree_on_error(run_.world, error);
}

void TrainingLoop::log_event(int at_step, const std::string& name, const std::string& line) {
  if (!run_.metrics) return;
  run_.metrics->print_line(line);
  if (!name.empty()) run_.metrics->event(at_step, name, line);
}

}  // namespace loom
