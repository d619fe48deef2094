// Rank 0's progress reporting (launch/metrics.h): the FLOPs formula against GPT-2 small worked
// out by hand, the progress line, JSON lines read back with the project's parser (escapes, NaN
// as null, appending on reopen, a torn last line cut off), the progress bar drawn only on a
// terminal (a pseudo-terminal here) and never into a file, durations, the measurements, and an MFU
// that never reads over 100%.
#include "launch/metrics.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "core/gpt.h"
#include "data/json.h"
#include "test_util.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

// Parameters of a GPT-2 from its shape: wte V x C, wpe T x C, per block two LayerNorms (4C),
// QKV (3C^2 + 3C), attention projection (C^2 + C), MLP (4C^2 + 4C and 4C^2 + C): 12C^2 + 13C;
// the final LayerNorm 2C.
int64_t gpt2_parameters(const GPTConfig& c) {
  const int64_t C = c.n_embd;
  return int64_t{c.vocab_size} * C + int64_t{c.max_seq_len} * C + c.n_layer * (12 * C * C + 13 * C) + 2 * C;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(begin, end - begin));
    begin = end + 1;
  }
  return lines;
}

std::vector<JsonValue> records_of(const std::string& path) {
  const std::string text = read_text(path);
  EXPECT_TRUE(text.empty() || text.back() == '\n') << "every record ends its line";
  std::vector<JsonValue> records;
  for (const std::string& line : lines_of(text)) records.push_back(json_parse(line));
  return records;
}

// Everything written to `f` so far.
std::string contents_of(FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  return out;
}

double number(const JsonValue& record, const char* key) {
  const JsonValue* v = record.find(key);
  EXPECT_NE(v, nullptr) << key;
  if (v == nullptr) return std::nan("");
  EXPECT_EQ(v->kind, JsonValue::Kind::kNumber) << key;
  return std::strtod(v->text.c_str(), nullptr);
}

std::string string_of(const JsonValue& record, const char* key) {
  const JsonValue* v = record.find(key);
  EXPECT_TRUE(v != nullptr && v->kind == JsonValue::Kind::kString) << key;
  return v != nullptr ? v->text : "";
}

TrainMetrics example_metrics() {
  TrainMetrics m;
  m.step = 100;
  m.steps = 1500;
  m.loss = 1.23449;
  m.lr = 1e-3;
  m.grad_norm = 0.5321;
  m.tokens_per_s = 12345;
  m.mfu = 0.3121;
  m.mem_bytes = uint64_t{412} * 1024 * 1024;
  m.eta_s = 65;
  m.step_ms = 41.5;
  return m;
}

TEST(MetricsTest, ParameterCountOfTheFormulaIsTheModels) {
  const GPTConfig small{3, 4, 32, 50, 24};
  EXPECT_EQ(GPT(small).num_parameters(), gpt2_parameters(small));
}

TEST(MetricsTest, FlopsPerTokenOfGpt2Small) {
  const GPTConfig c{12, 12, 768, 50257, 1024};
  const int64_t n = gpt2_parameters(c);
  // 38,597,376 (wte) + 786,432 (wpe) + 12 x 7,087,872 (blocks) + 1,536 (ln_f).
  EXPECT_EQ(n, 124439808);
  EXPECT_NEAR(static_cast<double>(n), 124.4e6, 0.1e6) << "GPT-2 small has about 124.4M parameters";
  // 6 x (124,439,808 - 786,432) + 12 x 12 x 1024 x 768 = 741,920,256 + 113,246,208.
  EXPECT_DOUBLE_EQ(model_flops_per_token(c, n, 1024), 855166464.0);
  // Shorter training sequences shrink the attention term alone.
  EXPECT_DOUBLE_EQ(model_flops_per_token(c, n, 256), 741920256.0 + 12.0 * 12 * 256 * 768);
  EXPECT_THROW(model_flops_per_token(c, n, 2048), Error);
}

TEST(MetricsTest, ProgressLine) {
  EXPECT_EQ(format_progress_line(example_metrics()),
            "step   100/1500 | loss 1.2345 | lr 1.00e-03 | grad norm 0.532 | 12.3k tok/s | MFU 31.2% | "
            "mem 412 MiB | ETA 1m05s");
  TrainMetrics bare;
  bare.step = 40;
  bare.steps = 40;
  bare.loss = 0.5;
  bare.lr = 2e-4;
  bare.grad_norm = 1;
  EXPECT_EQ(format_progress_line(bare), "step    40/40 | loss 0.5000 | lr 2.00e-04 | grad norm 1.000")
      << "unknown fields are left out";
  TrainMetrics big = example_metrics();
  big.tokens_per_s = 2.5e6;
  big.mem_bytes = uint64_t{3} << 30;
  big.eta_s = 3725;
  EXPECT_EQ(format_progress_line(big),
            "step   100/1500 | loss 1.2345 | lr 1.00e-03 | grad norm 0.532 | 2.50M tok/s | MFU 31.2% | "
            "mem 3.00 GiB | ETA 1h02m");
}

TEST(MetricsTest, RecordsReadBackWithEveryKey) {
  TempDir dir("metrics");
  const std::string path = dir / "run/logs/metrics.jsonl";  // the directories do not exist yet
  FILE* out = std::tmpfile();
  ASSERT_NE(out, nullptr);
  const double before = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  {
    MetricsLog log(path, true, out);
    EXPECT_FALSE(log.bar_enabled()) << "a file is no terminal";
    log.progress(example_metrics());
    log.eval(100, {{"val_loss", 3.25}, {"perplexity", std::exp(3.25)}});
    log.event(100, "checkpoint", "saved step-00000100");
    log.print_line("eval    100/1500 | validation loss 3.2500");
  }
  EXPECT_EQ(contents_of(out),
            format_progress_line(example_metrics()) + "\neval    100/1500 | validation loss 3.2500\n");
  std::fclose(out);

  const std::vector<JsonValue> r = records_of(path);
  ASSERT_EQ(r.size(), 3u);
  for (const JsonValue& record : r) {
    ASSERT_EQ(record.kind, JsonValue::Kind::kObject);
    EXPECT_GE(number(record, "time"), before - 1);
    EXPECT_LE(number(record, "time"), before + 60);
    EXPECT_EQ(record.find("step")->as_int64(), 100);
  }
  EXPECT_EQ(string_of(r[0], "kind"), "train");
  EXPECT_EQ(r[0].find("steps")->as_int64(), 1500);
  EXPECT_EQ(number(r[0], "loss"), 1.23449) << "the shortest text that reads back exactly";
  EXPECT_EQ(number(r[0], "lr"), 1e-3);
  EXPECT_EQ(number(r[0], "grad_norm"), 0.5321);
  EXPECT_EQ(number(r[0], "tokens_per_s"), 12345);
  EXPECT_EQ(number(r[0], "mfu"), 0.3121);
  EXPECT_EQ(r[0].find("mem_bytes")->as_int64(), int64_t{412} * 1024 * 1024);
  EXPECT_EQ(number(r[0], "eta_s"), 65);
  EXPECT_EQ(number(r[0], "step_ms"), 41.5);
  EXPECT_EQ(r[0].members.size(), 12u) << "time, kind and the ten fields of TrainMetrics";

  EXPECT_EQ(string_of(r[1], "kind"), "eval");
  EXPECT_EQ(number(r[1], "val_loss"), 3.25);
  EXPECT_EQ(number(r[1], "perplexity"), std::exp(3.25));

  EXPECT_EQ(string_of(r[2], "kind"), "event");
  EXPECT_EQ(string_of(r[2], "event"), "checkpoint");
  EXPECT_EQ(string_of(r[2], "message"), "saved step-00000100");
}

TEST(MetricsTest, StringsAreEscapedAndInvalidUtf8Replaced) {
  TempDir dir("metrics");
  const std::string path = dir / "metrics.jsonl";
  const std::string message = "quote \" backslash \\ newline \n tab \t bell \x07 del \x7f caf\xC3\xA9 \xE4\xB8\xAD end";
  {
    MetricsLog log(path, false, stdout);
    log.event(7, "rollback", message);
    log.event(8, "odd \"name\"\n", "bad \xFF byte \xC3( and a cut \xE4\xB8");
    log.eval(8, {{"tab\tkey", 1}});
  }
  const std::string text = read_text(path);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 3) << "newlines inside strings are escaped:\n" << text;
  EXPECT_NE(text.find("\\u0007"), std::string::npos) << text;
  const std::vector<JsonValue> r = records_of(path);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(string_of(r[0], "message"), message);
  EXPECT_EQ(string_of(r[1], "event"), "odd \"name\"\n");
  EXPECT_EQ(string_of(r[1], "message"), "bad \xEF\xBF\xBD byte \xEF\xBF\xBD( and a cut \xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(number(r[2], "tab\tkey"), 1);

  EXPECT_EQ(json_quote(""), "\"\"");
  EXPECT_EQ(json_quote("a\x01z"), "\"a\\u0001z\"");
}

TEST(MetricsTest, NanAndInfinityAreNull) {
  EXPECT_EQ(json_number(std::numeric_limits<double>::quiet_NaN()), "null");
  EXPECT_EQ(json_number(std::numeric_limits<double>::infinity()), "null");
  EXPECT_EQ(json_number(-std::numeric_limits<double>::infinity()), "null");
  EXPECT_EQ(json_number(0.1), "0.1");
  EXPECT_EQ(json_number(-2), "-2");
  EXPECT_EQ(json_number(1e-300), "1e-300");

  TempDir dir("metrics");
  const std::string path = dir / "metrics.jsonl";
  FILE* out = std::tmpfile();
  ASSERT_NE(out, nullptr);
  {
    MetricsLog log(path, false, out);
    TrainMetrics m;  // everything unknown
    m.step = 3;
    m.steps = 9;
    m.loss = std::numeric_limits<double>::quiet_NaN();
    m.grad_norm = std::numeric_limits<double>::infinity();
    log.progress(m);
    log.eval(3, {{"val_loss", std::numeric_limits<double>::quiet_NaN()}});
  }
  const std::vector<JsonValue> r = records_of(path);  // json_parse rejects NaN: it must not be there
  ASSERT_EQ(r.size(), 2u);
  for (const char* key : {"loss", "lr", "grad_norm", "tokens_per_s", "mfu", "mem_bytes", "eta_s", "step_ms"}) {
    ASSERT_NE(r[0].find(key), nullptr) << key;
    EXPECT_EQ(r[0].find(key)->kind, JsonValue::Kind::kNull) << key;
  }
  EXPECT_EQ(r[1].find("val_loss")->kind, JsonValue::Kind::kNull);
  EXPECT_EQ(contents_of(out), "step     3/9 | loss nan | lr nan | grad norm inf\n");
  std::fclose(out);
}

TEST(MetricsTest, ReopeningAppendsAndCutsATornLastLine) {
  TempDir dir("metrics");
  const std::string path = dir / "metrics.jsonl";
  {
    MetricsLog log(path, false, stdout);
    log.event(0, "start", "first run");
  }
  {
    MetricsLog log(path, false, stdout);
    log.event(5, "resume", "second run");
  }
  std::vector<JsonValue> r = records_of(path);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(string_of(r[0], "message"), "first run");
  EXPECT_EQ(string_of(r[1], "message"), "second run");

  // A crash in the middle of a record: the next run drops the fragment.
  std::ofstream(path, std::ios::app) << "{\"time\": 1, \"kind\": \"tra";
  {
    MetricsLog log(path, false, stdout);
    log.event(9, "resume", "third run");
  }
  r = records_of(path);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(string_of(r[2], "message"), "third run");

  // A file of nothing but a fragment.
  const std::string torn = dir / "torn.jsonl";
  std::ofstream(torn) << "{\"time\"";
  {
    MetricsLog log(torn, false, stdout);
  }
  EXPECT_EQ(read_text(torn), "");

  MetricsLog none("", true, stdout);  // no file: records go nowhere
  none.event(1, "resume", "nothing written");
  EXPECT_EQ(none.jsonl_path(), "");
}

TEST(MetricsTest, AFullDiskEndsTheRecordsNotTheTraining) {
  MetricsLog log("/dev/full", false, stdout);
  ::testing::internal::CaptureStderr();
  TrainMetrics m;
  m.step = 1;
  m.steps = 2;
  EXPECT_NO_THROW(log.progress(m));
  EXPECT_NO_THROW(log.event(2, "checkpoint", "saved"));
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("warning: cannot write metrics file /dev/full"), std::string::npos) << err;
  EXPECT_EQ(err.find("warning", err.find("warning") + 1), std::string::npos) << "warned more than once:\n" << err;
}

TEST(MetricsTest, UnwritableFileIsAUserError) {
  TempDir dir("metrics");
  std::ofstream(dir / "file") << "x";
  EXPECT_THROW(MetricsLog(dir / "file/metrics.jsonl", false, stdout), UserError);
  EXPECT_THROW(MetricsLog(dir.str(), false, stdout), UserError) << "a directory";
}

TEST(MetricsTest, NoBarWithoutATerminal) {
  FILE* out = std::tmpfile();
  ASSERT_NE(out, nullptr);
  {
    MetricsLog log("", true, out);
    EXPECT_FALSE(log.bar_enabled());
    for (int step = 1; step <= 50; ++step) log.tick(step, 50, 10.0);
    log.progress(example_metrics());
    log.clear_bar();
    log.tick(50, 50, 0);
  }
  const std::string text = contents_of(out);
  EXPECT_EQ(text, format_progress_line(example_metrics()) + "\n");
  EXPECT_EQ(text.find('\r'), std::string::npos);
  EXPECT_EQ(text.find('\033'), std::string::npos);
  std::fclose(out);
}

TEST(MetricsTest, BarOnATerminalIsErasedBeforeEachLine) {
  const int master = ::posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0) GTEST_SKIP() << "no pseudo-terminals here";
  const char* name = ::ptsname(master);
  ASSERT_NE(name, nullptr);
  const int slave = ::open(name, O_RDWR | O_NOCTTY);
  ASSERT_GE(slave, 0);
  FILE* out = ::fdopen(slave, "w");
  ASSERT_NE(out, nullptr);
  {
    MetricsLog off("", false, out);
    EXPECT_FALSE(off.bar_enabled()) << "not asked for";
    MetricsLog log("", true, out);
    ASSERT_TRUE(log.bar_enabled());
    log.tick(312, 1500, 65);
    log.tick(313, 1500, 64);  // within 0.1 s: not redrawn
    log.progress(example_metrics());
    log.tick(1500, 1500, 0);  // the last step is always drawn
  }  // the destructor erases the bar
  std::fclose(out);
  ::fcntl(master, F_SETFL, O_NONBLOCK);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(master, buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  ::close(master);
  const std::string bar = "\r[######........................] 312/1500  21% ETA 1m05s\033[K";
  const std::string line = format_progress_line(example_metrics());
  const std::string last = "\r[##############################] 1500/1500 100% ETA 0s\033[K";
  // The terminal turns "\n" into "\r\n".
  EXPECT_EQ(text, bar + "\r\033[K" + line + "\r\n" + last + "\r\033[K");
}

TEST(MetricsTest, Durations) {
  EXPECT_EQ(format_duration(0), "0s");
  EXPECT_EQ(format_duration(42), "42s");
  EXPECT_EQ(format_duration(59.4), "59s");
  EXPECT_EQ(format_duration(59.6), "1m00s");
  EXPECT_EQ(format_duration(187), "3m07s");
  EXPECT_EQ(format_duration(3599), "59m59s");
  EXPECT_EQ(format_duration(3720), "1h02m");
  EXPECT_EQ(format_duration(86399), "23h59m");
  EXPECT_EQ(format_duration(86400 + 5 * 3600 + 59), "1d05h");
  EXPECT_EQ(format_duration(-1), "?");
  EXPECT_EQ(format_duration(std::numeric_limits<double>::quiet_NaN()), "?");
  EXPECT_EQ(format_duration(std::numeric_limits<double>::infinity()), "?");
}

TEST(MetricsTest, EtaFromTheStepsTimedSoFar) {
  const EtaClock clock(10);
  EXPECT_TRUE(std::isnan(clock.eta_s(10, 100))) << "no step timed yet";
  std::this_thread::sleep_for(std::chrono::milliseconds(40));
  const double eta = clock.eta_s(12, 100);  // 2 steps in >= 40 ms: >= 20 ms each, 88 to go
  EXPECT_GE(eta, 88 * 0.02);
  EXPECT_LT(eta, 88 * 5.0);
  EXPECT_EQ(clock.eta_s(100, 100), 0);
}

TEST(MetricsTest, MfuNeverExceedsOne) {
  // A measured peak that training beats (measured on a busy machine) is raised to training's rate.
  MfuMeter measured(100e9, true);
  EXPECT_DOUBLE_EQ(measured.mfu(50e9), 0.5);
  EXPECT_FALSE(measured.raised());
  EXPECT_DOUBLE_EQ(measured.mfu(150e9), 1.0);
  EXPECT_TRUE(measured.raised());
  EXPECT_DOUBLE_EQ(measured.peak_flops(), 150e9);
  EXPECT_DOUBLE_EQ(measured.mfu(75e9), 0.5) << "against the raised peak from then on";
  EXPECT_TRUE(std::isnan(measured.mfu(std::nan("")))) << "no rate";

  // A stated peak stays what it was stated to be.
  MfuMeter stated(100e9, false);
  EXPECT_DOUBLE_EQ(stated.mfu(150e9), 1.5);
  EXPECT_FALSE(stated.raised());
  EXPECT_DOUBLE_EQ(stated.peak_flops(), 100e9);
  EXPECT_TRUE(std::isnan(MfuMeter(0, true).mfu(1e9))) << "no peak";

  // MetricsLog reports at most 100%, on the line and in the record.
  TempDir dir("metrics");
  const std::string path = dir / "metrics.jsonl";
  FILE* out = std::tmpfile();
  ASSERT_NE(out, nullptr);
  {
    MetricsLog log(path, false, out);
    TrainMetrics m = example_metrics();
    m.mfu = 1.5;
    log.progress(m);
  }
  const std::string line = contents_of(out);
  std::fclose(out);
  EXPECT_NE(line.find("| MFU 100.0% |"), std::string::npos) << line;
  const std::vector<JsonValue> r = records_of(path);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(number(r[0], "mfu"), 1.0);
}

TEST(MetricsTest, Measurements) {
  const auto start = std::chrono::steady_clock::now();
  const double flops = measure_cpu_peak_flops(1);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GT(flops, 1e8) << "one core does more than 0.1 GFLOP/s";
  EXPECT_LT(flops, 1e13);
  EXPECT_LT(seconds, 10.0) << "about 0.2 s, more when the cores are shared";
  EXPECT_GT(peak_rss_bytes(), uint64_t{1} << 20);
  EXPECT_GT(current_rss_bytes(), uint64_t{1} << 20);
}

}  // namespace
}  // namespace loom
