// What rank 0 of `loom train` reports while it trains: the progress line a person reads, the
// same numbers as JSON lines a program reads (docs/metrics.md has the schema; `loom plot` draws
// them), a progress bar redrawn in place on a terminal, and the figures behind them: model FLOPs
// per token for MFU, the CPU's measured sgemm peak, memory in use, durations for the ETA.
#pragma once

#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/gpt.h"
#include "launch/tensorboard.h"

namespace loom {

// Training FLOPs per token of a GPT (PaLM's appendix B, nanoGPT's estimate_mfu):
//   6 * N + 12 * L * T * C
// N: the parameters of every matmul, that is `n_params` (the whole model's count, wpe included,
// as GPT::num_parameters of the assembled model gives it) less the position embedding wpe
// (max_seq_len x n_embd), a lookup; the tied wte stays in, it is the output projection. 6 = 2
// (multiply and add) x 3 (forward, and the backward's two matmuls). 12 * L * T * C: the
// attention scores and their weighted sum, per layer 2 matmuls of 2 * T * C FLOPs per token,
// forward and backward (x3), with no discount for the causal mask. T = `seq_len`, the length of
// the training sequences (it may be shorter than max_seq_len). For the Llama family N leaves out
// the untied input embedding (a lookup; lm_head stays) and the RMSNorm gains; its attention is
// n_head x head size = C wide too, so the second term is the same (grouped-query attention shares
// K and V between heads but computes every head's scores).
double model_flops_per_token(const GPTConfig& c, int64_t n_params, int seq_len);

// This process's dense fp32 FLOP/s, measured with OpenBLAS sgemm on 1024 x 1024 matrices for
// about 0.2 s on `threads` threads (<= 0: OpenBLAS's current setting, which is restored after).
// The rate is that of the fastest of the timed calls (after one warm-up call): on a machine
// that others use too, a call that ran undisturbed is the nearest to what the cores can do. The
// MFU denominator on CPU is the sum over hosts (one rank per host measures).
double measure_cpu_peak_flops(int threads);

// MFU = achieved FLOP/s over the peak. A measured peak (the CPU's sgemm rate, taken in 0.2 s of a
// machine that may be busy) can read low; when training runs faster than it, the peak is raised
// to the rate training reached, so MFU never exceeds 1. A stated peak (metrics.peak_tflops, a
// GPU's datasheet figure) is kept; MetricsLog caps what it reports at 1.
class MfuMeter {
 public:
  // `peak_flops` <= 0: no peak, MFU unknown.
  MfuMeter(double peak_flops, bool measured) : peak_flops_(peak_flops), measured_(measured) {}
  // The MFU of `achieved_flops` (NaN when it or the peak is not known), raising a measured peak
  // first when `achieved_flops` exceeds it.
  double mfu(double achieved_flops);
  double peak_flops() const { return peak_flops_; }
  // Whether training has run faster than the measured peak.
  bool raised() const { return raised_; }

 private:
  double peak_flops_;
  bool measured_;
  bool raised_ = false;
};

// The process's peak resident memory so far (getrusage's ru_maxrss), and its resident memory
// now (/proc/self/statm), in bytes; 0 where the system does not say.
uint64_t peak_rss_bytes();
uint64_t current_rss_bytes();

// 950, 12.3k, 1.25M: a count (tokens per second, parameters) in three significant figures.
std::string format_count(double value);

// "42s", "3m07s", "1h02m", "2d05h", rounded to the unit shown; "?" for a negative or non-finite
// number of seconds.
std::string format_duration(double seconds);

// One progress report. A NaN (or, for mem_bytes, 0) means "not known": left out of the printed
// line, null in the JSON record.
struct TrainMetrics {
  static constexpr double kUnknown = std::numeric_limits<double>::quiet_NaN();

  int step = 0;              // steps done, counted from 1
  int steps = 0;             // train.steps
  double loss = kUnknown;    // mean training loss over the steps since the last report
  double lr = kUnknown;      // the learning rate of the last step
  double grad_norm = kUnknown;  // the global gradient norm of the last step, before clipping
  double tokens_per_s = kUnknown;  // training tokens per second over the window, all ranks
  double mfu = kUnknown;     // model FLOPs utilisation, a fraction (0.312 is printed 31.2%); reported as at most 1
  uint64_t mem_bytes = 0;    // the largest peak RSS of the ranks on CPU, device memory on a GPU
  double eta_s = kUnknown;   // seconds until train.steps, at the current rate
  double step_ms = kUnknown;  // milliseconds per step over the window
};

// Seconds left until `steps`, from the wall-clock rate of the steps this process has run since
// it was made (evaluations and checkpoint saves included, so the estimate counts them too).
class EtaClock {
 public:
  // `first_step`: the steps already done when timing starts (the resumed step, or 0).
  explicit EtaClock(int first_step);
  // NaN until a step has been timed.
  double eta_s(int step, int steps) const;

 private:
  int first_step_;
  double start_s_;
};

// Rank 0's reporter. Lines go to `out` as they are; JSON records, one object per line, are
// appended to a file, and their numbers are written as TensorBoard scalars to an event file
// (launch/tensorboard.h), each record flushed as it is written so that a crash loses none and
// `loom plot` or TensorBoard can read a run in progress.
class MetricsLog {
 public:
  // `jsonl_path`: the JSON lines file; "" for none. Its directory is created; it is opened for
  // appending (a resumed run continues it), a torn last line of a crashed run cut off first.
  // `tensorboard_dir`: the directory of a new TensorBoard event file; "" for none.
  // Throws UserError when either cannot be opened. A record that cannot be written later (a
  // full disk) gives one warning on stderr and ends the records of that file, never the training.
  // `progress_bar`: draw the bar of tick() when `out` is a terminal; otherwise (a pipe, a log
  // file) tick() never prints anything.
  MetricsLog(const std::string& jsonl_path, bool progress_bar, FILE* out = stdout,
             const std::string& tensorboard_dir = "");
  // Erases a drawn bar and closes the file.
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  // Prints the progress line and appends a "train" record:
  //   step   100/1500 | loss 1.2345 | lr 1.00e-03 | grad norm 0.532 | 12.3k tok/s | MFU 31.2% | mem 412 MiB | ETA 1m05s
  // Its known numbers are the TensorBoard scalars train/loss, train/lr, ... (the JSON keys).
  void progress(const TrainMetrics& m);
  // Appends an "eval" record with these measurements, e.g. {{"val_loss", 3.2}}, and the finite
  // ones as TensorBoard scalars eval/val_loss, ... Prints nothing.
  void eval(int step, const std::vector<std::pair<std::string, double>>& values);
  // Appends an "event" record: `name` one word ("resume", "checkpoint", "skip", "rollback",
  // "stop", ...) and `message` the sentence the caller prints for it. Prints nothing. A
  // "resume" or "rollback" at `step` (the steps done) tells TensorBoard that the steps after
  // it are done again: it drops what it holds of them from an earlier attempt.
  void event(int step, const std::string& name, const std::string& message);
  // Prints `line` and a newline (after erasing the bar, if one is drawn), and flushes `out`: how
  // the caller prints its own eval and event lines while a bar may be on the screen.
  void print_line(const std::string& line);
  // Redraws the bar, e.g. "[#########.....................] 312/1500  21% ETA 1m05s", at most
  // ten times a second (and always for the last step), when the bar is enabled.
  void tick(int step, int steps, double eta_s);
  // Erases the bar if one is drawn; for callers that print to `out` themselves.
  void clear_bar();

  // Whether tick() draws: progress_bar was asked for and `out` is a terminal.
  bool bar_enabled() const { return bar_enabled_; }
  const std::string& jsonl_path() const { return path_; }
  // The event file; "" when none is written.
  std::string tensorboard_path() const { return tensorboard_ ? tensorboard_->path() : std::string(); }

 private:
  void write_record(double time, const std::string& fields);
  void write_event(const std::string& event);

  std::string path_;
  FILE* file_ = nullptr;
  std::unique_ptr<TensorBoardWriter> tensorboard_;
  FILE* out_;
  bool bar_enabled_;
  bool bar_drawn_ = false;
  double last_draw_s_ = -1;
};

// The line progress() prints, without the newline.
std::string format_progress_line(const TrainMetrics& m);

// `text` as a JSON string literal, quotes included: '"', '\\' and control characters escaped,
// bytes that are not valid UTF-8 replaced by U+FFFD (so that any strict parser reads it).
std::string json_quote(const std::string& text);

// `x` as a JSON number (the shortest text that reads back as the same double), or null when it
// is NaN or infinite (JSON has neither).
std::string json_number(double x);

}  // namespace loom
