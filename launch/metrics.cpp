#include "launch/metrics.h"

#include <cblas.h>
#include <fcntl.h>
#include <omp.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string_view>

#include "core/base/check.h"
#include "data/utf8.h"

namespace loom {

namespace {

double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// 412 MiB, 3.25 GiB.
std::string format_memory(uint64_t bytes) {
  const double mib = static_cast<double>(bytes) / (1024.0 * 1024.0);
  char buf[32];
  if (mib < 1024) std::snprintf(buf, sizeof buf, "%.0f MiB", mib);
  else std::snprintf(buf, sizeof buf, "%.2f GiB", mib / 1024);
  return buf;
}

std::string errno_text() { return std::strerror(errno); }

// Cuts a last line that has no newline (a record torn by a crash) off the file `fd`, so that
// the records appended next start on a line of their own.
void drop_torn_tail(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail_user("cannot stat metrics file", path + ":", errno_text());
  off_t end = st.st_size;
  if (end == 0) return;
  char last = 0;
  if (::pread(fd, &last, 1, end - 1) != 1) fail_user("cannot read metrics file", path + ":", errno_text());
  if (last == '\n') return;
  char buf[4096];
  off_t keep = 0;
  for (off_t pos = end; pos > 0 && keep == 0;) {
    const off_t from = std::max<off_t>(0, pos - static_cast<off_t>(sizeof buf));
    const auto n = static_cast<size_t>(pos - from);
    if (::pread(fd, buf, n, from) != static_cast<ssize_t>(n)) {
      fail_user("cannot read metrics file", path + ":", errno_text());
    }
    for (size_t i = n; i > 0; --i) {
      if (buf[i - 1] == '\n') {
        keep = from + static_cast<off_t>(i);
        break;
      }
    }
    pos = from;
  }
  if (::ftruncate(fd, keep) != 0) fail_user("cannot truncate metrics file", path + ":", errno_text());
}

// Appends `c` as JSON wants it inside a string.
void append_escaped(std::string& out, char c) {
  switch (c) {
    case '"': out += "\\\""; return;
    case '\\': out += "\\\\"; return;
    case '\n': out += "\\n"; return;
    case '\r': out += "\\r"; return;
    case '\t': out += "\\t"; return;
    case '\b': out += "\\b"; return;
    case '\f': out += "\\f"; return;
    default: break;
  }
  const auto u = static_cast<unsigned char>(c);
  if (u < 0x20 || u == 0x7F) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "\\u%04x", u);
    out += buf;
  } else {
    out += c;
  }
}

}  // namespace

double model_flops_per_token(const GPTConfig& c, int64_t n_params, int seq_len) {
  LOOM_CHECK(seq_len > 0 && seq_len <= c.max_seq_len, "seq_len", seq_len, "must be in 1 ..", c.max_seq_len);
  // The tensors that are looked up or scaled, not multiplied: GPT-2's wpe; Llama's untied input
  // embedding and its RMSNorm gains (GPT-2's LayerNorms, 4 L C + 2 C, stay in as before: 0.01%).
  const double C = c.n_embd;
  const double lookups = c.llama() ? (c.tied() ? 0.0 : static_cast<double>(c.vocab_size) * C) + (2.0 * c.n_layer + 1) * C
                                   : static_cast<double>(c.max_seq_len) * C;
  const double matmul_params = static_cast<double>(n_params) - lookups;
  LOOM_CHECK(matmul_params > 0, "n_params", n_params, "must exceed the embeddings' and norms'", lookups);
  return 6.0 * matmul_params + 12.0 * c.n_layer * static_cast<double>(seq_len) * c.n_embd;
}

double measure_cpu_peak_flops(int threads) {
  const int saved_omp = omp_get_max_threads();
  const int saved_blas = openblas_get_num_threads();
  if (threads > 0) {
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
  }
  constexpr int n = 1024;
  const std::vector<float> a(static_cast<size_t>(n) * n, 0.5f), b(a.size(), 0.25f);
  std::vector<float> out(a.size());
  auto sgemm = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f,
                out.data(), n);
  };
  sgemm();  // warms the caches and starts the threads
  int calls = 0;
  const double start = steady_seconds();
  double fastest = std::numeric_limits<double>::infinity();
  for (double now = start; calls < 3 || (now - start < 0.2 && calls < 200); ++calls) {
    sgemm();
    const double end = steady_seconds();
    fastest = std::min(fastest, end - now);
    now = end;
  }
  if (threads > 0) {
    omp_set_num_threads(saved_omp);
    openblas_set_num_threads(saved_blas);
  }
  return 2.0 * n * n * static_cast<double>(n) / fastest;
}

double MfuMeter::mfu(double achieved_flops) {
  if (!(peak_flops_ > 0) || !std::isfinite(achieved_flops)) return TrainMetrics::kUnknown;
  if (measured_ && achieved_flops > peak_flops_) {
    peak_flops_ = achieved_flops;
    raised_ = true;
  }
  return achieved_flops / peak_flops_;
}

uint64_t peak_rss_bytes() {
  struct rusage usage {};
  if (::getrusage(RUSAGE_SELF, &usage) != 0) return 0;
  return static_cast<uint64_t>(usage.ru_maxrss) * 1024;  // Linux counts in KiB
}

uint64_t current_rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  if (!(statm >> size >> resident)) return 0;
  const long page = ::sysconf(_SC_PAGESIZE);
  return page > 0 ? resident * static_cast<uint64_t>(page) : 0;
}

std::string format_count(double value) {
  char buf[32];
  if (value >= 1e6) std::snprintf(buf, sizeof buf, "%.2fM", value / 1e6);
  else if (value >= 1e3) std::snprintf(buf, sizeof buf, "%.1fk", value / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", value);
  return buf;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long long s = std::llround(seconds);
  char buf[40];
  if (s < 60) std::snprintf(buf, sizeof buf, "%llds", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  else if (s < 86400) std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, s % 3600 / 60);
  else std::snprintf(buf, sizeof buf, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
  return buf;
}

std::string json_quote(const std::string& text) {
  std::string out = "\"";
  std::string_view rest = text;
  while (!rest.empty()) {
    const size_t bad = utf8_find_invalid(rest);
    const std::string_view valid = rest.substr(0, bad);
    for (char c : valid) append_escaped(out, c);
    if (bad == std::string_view::npos) break;
    out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
    rest.remove_prefix(bad + 1);
  }
  return out + "\"";
}

std::string json_number(double x) {
  if (!std::isfinite(x)) return "null";
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, x);
  LOOM_CHECK(ec == std::errc(), "to_chars failed for", x);
  return std::string(buf, end);
}

std::string format_progress_line(const TrainMetrics& m) {
  char head[160];
  std::snprintf(head, sizeof head, "step %5d/%d | loss %.4f | lr %.2e | grad norm %.3f", m.step, m.steps, m.loss,
                m.lr, m.grad_norm);
  std::string line = head;
  if (std::isfinite(m.tokens_per_s)) line += " | " + format_count(m.tokens_per_s) + " tok/s";
  if (std::isfinite(m.mfu)) {
    char mfu[32];
    std::snprintf(mfu, sizeof mfu, " | MFU %.1f%%", 100 * m.mfu);
    line += mfu;
  }
  if (m.mem_bytes > 0) line += " | mem " + format_memory(m.mem_bytes);
  if (std::isfinite(m.eta_s)) line += " | ETA " + format_duration(m.eta_s);
  return line;
}

EtaClock::EtaClock(int first_step) : first_step_(first_step), start_s_(steady_seconds()) {}

double EtaClock::eta_s(int step, int steps) const {
  const int done = step - first_step_;
  if (done <= 0) return TrainMetrics::kUnknown;
  const double per_step = (steady_seconds() - start_s_) / done;
  return per_step * std::max(0, steps - step);
}

MetricsLog::MetricsLog(const std::string& jsonl_path, bool progress_bar, FILE* out, const std::string& tensorboard_dir)
    : path_(jsonl_path), out_(out), bar_enabled_(progress_bar && ::isatty(::fileno(out)) == 1) {
  if (!tensorboard_dir.empty()) tensorboard_ = std::make_unique<TensorBoardWriter>(tensorboard_dir);
  if (path_.empty()) return;
  namespace fs = std::filesystem;
  const fs::path parent = fs::path(path_).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    fs::create_directories(parent, ec);
    if (ec) fail_user("cannot create the directory", parent.string(), "for the metrics file:", ec.message());
  }
  const int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) fail_user("cannot open metrics file", path_, "for appending:", errno_text());
  try {
    drop_torn_tail(fd, path_);
  } catch (...) {
    ::close(fd);
    throw;
  }
  file_ = ::fdopen(fd, "a");
  if (file_ == nullptr) {
    ::close(fd);
    fail_user("cannot open metrics file", path_, "for appending:", errno_text());
  }
}

MetricsLog::~MetricsLog() {
  clear_bar();
  if (file_ != nullptr) std::fclose(file_);
}

void MetricsLog::write_record(double time, const std::string& fields) {
  if (file_ == nullptr) return;
  const std::string line = "{\"time\": " + json_number(time) + ", " + fields + "}\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0) {
    // A full disk must not end the training (the checkpoints say for themselves whether they
    // can be written): say so once, and write no more records.
    clear_bar();
    std::fprintf(stderr, "loom train: warning: cannot write metrics file %s: %s; no more metrics records are written\n",
                 path_.c_str(), errno_text().c_str());
    std::fclose(file_);
    file_ = nullptr;
  }
}

void MetricsLog::write_event(const std::string& event) {
  if (!tensorboard_ || !tensorboard_->ok() || tensorboard_->write(event)) return;
  clear_bar();
  std::fprintf(stderr, "loom train: warning: cannot write TensorBoard event file %s: %s; no more events are written\n",
               tensorboard_->path().c_str(), tensorboard_->error().c_str());
}

void MetricsLog::progress(const TrainMetrics& reported) {
  // Above 1 the peak was stated too low (a measured one is raised, MfuMeter): report the cap.
  TrainMetrics m = reported;
  if (m.mfu > 1) m.mfu = 1;
  print_line(format_progress_line(m));
  const double now = unix_seconds();
  // The record's numbers in the order the JSON lists them; each known one is a scalar too.
  const std::pair<const char*, double> values[] = {
      {"loss", m.loss},
      {"lr", m.lr},
      {"grad_norm", m.grad_norm},
      {"tokens_per_s", m.tokens_per_s},
      {"mfu", m.mfu},
      {"mem_bytes", m.mem_bytes > 0 ? static_cast<double>(m.mem_bytes) : TrainMetrics::kUnknown},
      {"eta_s", m.eta_s},
      {"step_ms", m.step_ms},
  };
  std::string fields =
      "\"kind\": \"train\", \"step\": " + std::to_string(m.step) + ", \"steps\": " + std::to_string(m.steps);
  std::vector<TensorBoardScalar> scalars;
  for (const auto& [key, value] : values) {
    fields += std::string(", \"") + key + "\": ";
    // mem_bytes is an integer of bytes, written as one whatever its size.
    const bool bytes = key == std::string_view("mem_bytes") && m.mem_bytes > 0;
    fields += bytes ? std::to_string(m.mem_bytes) : json_number(value);
    if (std::isfinite(value)) scalars.push_back({std::string("train/") + key, static_cast<float>(value)});
  }
  write_record(now, fields);
  if (tensorboard_ && !scalars.empty()) write_event(event_scalars(now, m.step, scalars));
}

void MetricsLog::eval(int step, const std::vector<std::pair<std::string, double>>& values) {
  const double now = unix_seconds();
  std::string fields = "\"kind\": \"eval\", \"step\": " + std::to_string(step);
  std::vector<TensorBoardScalar> scalars;
  for (const auto& [name, value] : values) {
    fields += ", " + json_quote(name) + ": " + json_number(value);
    if (std::isfinite(value)) scalars.push_back({"eval/" + name, static_cast<float>(value)});
  }
  write_record(now, fields);
  if (tensorboard_ && !scalars.empty()) write_event(event_scalars(now, step, scalars));
}

void MetricsLog::event(int step, const std::string& name, const std::string& message) {
  const double now = unix_seconds();
  write_record(now, "\"kind\": \"event\", \"step\": " + std::to_string(step) + ", \"event\": " + json_quote(name) +
                        ", \"message\": " + json_quote(message));
  // The first step redone is step + 1 (`step` counts the steps done): what TensorBoard holds of
  // it and after it is an earlier attempt's.
  if (tensorboard_ && (name == "resume" || name == "rollback")) write_event(event_restart(now, step + 1));
}

void MetricsLog::print_line(const std::string& line) {
  clear_bar();
  std::fputs(line.c_str(), out_);
  std::fputc('\n', out_);
  std::fflush(out_);
}

void MetricsLog::tick(int step, int steps, double eta_s) {
  if (!bar_enabled_) return;
  const double now = steady_seconds();
  if (bar_drawn_ && now - last_draw_s_ < 0.1 && step < steps) return;
  last_draw_s_ = now;
  constexpr int kWidth = 30;
  const double fraction = steps > 0 ? std::clamp(static_cast<double>(step) / steps, 0.0, 1.0) : 1.0;
  const int filled = static_cast<int>(fraction * kWidth);
  const std::string bar =
      std::string(static_cast<size_t>(filled), '#') + std::string(static_cast<size_t>(kWidth - filled), '.');
  std::string eta;
  if (std::isfinite(eta_s)) eta = " ETA " + format_duration(eta_s);
  std::fprintf(out_, "\r[%s] %d/%d %3.0f%%%s\033[K", bar.c_str(), step, steps, 100 * fraction, eta.c_str());
  std::fflush(out_);
  bar_drawn_ = true;
}

void MetricsLog::clear_bar() {
  if (!bar_drawn_) return;
  std::fputs("\r\033[K", out_);
  std::fflush(out_);
  bar_drawn_ = false;
  last_draw_s_ = -1;
}

}  // namespace loom
