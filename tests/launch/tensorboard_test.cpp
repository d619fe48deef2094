// TensorBoard event files (launch/tensorboard.h): CRC-32C against its published check values, the
// TFRecord framing and the Event messages byte for byte against encodings worked out by hand from
// event.proto and summary.proto, the file's name and records, MetricsLog writing every number of
// its JSON records as a scalar; and, end to end, TensorBoard's own Python reader reading back a
// `loom train` run that was killed, resumed and rolled back with the values of its metrics.jsonl.
#include "launch/tensorboard.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "core/base/check.h"
#include "core/base/process.h"
#include "data/json.h"
#include "launch/loom_process.h"
#include "launch/metrics.h"
#include "test_util.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

uint64_t little_endian(const std::string& bytes, size_t at, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = v << 8 | static_cast<unsigned char>(bytes[at + static_cast<size_t>(i)]);
  return v;
}

// The data of every record of a TFRecord file, each CRC checked.
std::vector<std::string> records_of(const std::string& path) {
  const std::string bytes = read_text(path);
  std::vector<std::string> out;
  size_t at = 0;
  while (at < bytes.size()) {
    if (at + 12 > bytes.size()) {
      ADD_FAILURE() << path << ": a torn header at byte " << at;
      break;
    }
    const uint64_t length = little_endian(bytes, at, 8);
    EXPECT_EQ(little_endian(bytes, at + 8, 4), masked_crc32c(bytes.substr(at, 8))) << "record " << out.size();
    if (at + 16 + length > bytes.size()) {
      ADD_FAILURE() << path << ": record " << out.size() << " of " << length << " bytes is torn";
      break;
    }
    const std::string data = bytes.substr(at + 12, length);
    EXPECT_EQ(little_endian(bytes, at + 12 + length, 4), masked_crc32c(data)) << "record " << out.size();
    out.push_back(data);
    at += 16 + length;
  }
  return out;
}

std::vector<std::string> event_files(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0) files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

double json_number_of(const JsonValue& record, const char* key) {
  const JsonValue* v = record.find(key);
  return v != nullptr && v->kind == JsonValue::Kind::kNumber ? std::strtod(v->text.c_str(), nullptr) : std::nan("");
}

TEST(TensorBoardTest, Crc32cCheckValues) {
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u) << "the CRC catalogue's check value of CRC-32C";
  EXPECT_EQ(crc32c(""), 0u);
  // RFC 3720 (iSCSI), appendix B.4: 32 bytes of zeros, of ones, ascending.
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(crc32c(std::string(32, '\xFF')), 0x62A8AB43u);
  std::string ascending;
  for (int i = 0; i < 32; ++i) ascending += static_cast<char>(i);
  EXPECT_EQ(crc32c(ascending), 0x46DD794Eu);
  // ((0xE3069283 >> 15) | (0xE3069283 << 17)) + 0xa282ead8 (mod 2^32), by hand: 0x1C60D + 0x25060000
  // = 0x2507C60D, + 0xa282ead8 = 0xC78AB0E5.
  EXPECT_EQ(masked_crc32c("123456789"), 0xC78AB0E5u);
}

TEST(TensorBoardTest, TfRecordFraming) {
  const std::string record = tfrecord_frame("abc");
  ASSERT_EQ(record.size(), 8u + 4 + 3 + 4);
  EXPECT_EQ(record.substr(0, 8), std::string("\x03\0\0\0\0\0\0\0", 8)) << "the length, little-endian";
  EXPECT_EQ(little_endian(record, 8, 4), masked_crc32c(record.substr(0, 8)));
  EXPECT_EQ(record.substr(12, 3), "abc");
  EXPECT_EQ(little_endian(record, 15, 4), masked_crc32c("abc"));
  EXPECT_EQ(tfrecord_frame("").size(), 16u);
}

TEST(TensorBoardTest, EventsByteForByte) {
  // wall_time = 1.5: key 0x09 (field 1, fixed64), then 0x3FF8000000000000 little-endian.
  const std::string time = std::string("\x09\0\0\0\0\0\0\xF8\x3F", 9);
  // file_version (field 3, length-delimited: 0x1A), 13 bytes.
  EXPECT_EQ(event_file_version(1.5), time + "\x1A\x0D" + "brain.Event:2");
  // step 7 (field 2, varint: 0x10); summary (field 5: 0x2A) of 19 bytes: one value (field 1:
  // 0x0A) of 17 bytes: tag (field 1) "train/loss", simple_value (field 2, fixed32: 0x15) 0.25f
  // = 0x3E800000.
  const std::string value = std::string("\x0A\x0A") + "train/loss" + std::string("\x15\0\0\x80\x3E", 5);
  EXPECT_EQ(event_scalars(1.5, 7, {{"train/loss", 0.25f}}), time + "\x10\x07" + "\x2A\x13" + "\x0A\x11" + value);
  // Two values; step 300 is the varint AC 02.
  const std::string lr = std::string("\x0A\x08") + "train/lr" + std::string("\x15\0\0\0\0", 5);
  EXPECT_EQ(event_scalars(1.5, 300, {{"train/loss", 0.25f}, {"train/lr", 0.0f}}),
            time + "\x10\xAC\x02" + "\x2A\x24" + "\x0A\x11" + value + "\x0A\x0F" + lr);
  // session_log (field 7: 0x3A) of 2 bytes: status (field 1, varint) START = 1.
  EXPECT_EQ(event_restart(1.5, 11), time + "\x10\x0B" + "\x3A\x02\x08\x01");
}

TEST(TensorBoardTest, AFileOfRecordsNamedForTensorBoard) {
  TempDir dir("tensorboard");
  const std::string logdir = dir / "run/tb";  // does not exist yet
  std::string first_path;
  {
    TensorBoardWriter writer(logdir);
    first_path = writer.path();
    EXPECT_TRUE(writer.write(event_scalars(2.5, 1, {{"train/loss", 3.0f}})));
    EXPECT_TRUE(writer.ok());
    // Flushed as written: the records are in the file while it is open.
    EXPECT_EQ(records_of(first_path).size(), 2u);
  }
  const std::string name = fs::path(first_path).filename().string();
  const std::regex pattern(R"(events\.out\.tfevents\.(\d{10})\.(.+)\.(\d+))");
  std::smatch m;
  ASSERT_TRUE(std::regex_match(name, m, pattern)) << name;
  const long long now = static_cast<long long>(std::time(nullptr));
  EXPECT_LE(std::abs(std::stoll(m[1]) - now), 60) << name;
  EXPECT_EQ(m[2].str(), host_name());
  EXPECT_EQ(std::stoll(m[3]), ::getpid());

  const std::vector<std::string> records = records_of(first_path);
  ASSERT_EQ(records.size(), 2u);
  // The version event carries the time the file was made: only its tail is known here.
  EXPECT_EQ(records[0].substr(9), "\x1A\x0D" + std::string("brain.Event:2"));
  EXPECT_EQ(records[1], event_scalars(2.5, 1, {{"train/loss", 3.0f}}));

  // A second writer in the same directory and second gets a name of its own, sorting after.
  TensorBoardWriter second(logdir);
  EXPECT_NE(second.path(), first_path);
  EXPECT_EQ(event_files(logdir).size(), 2u);
  EXPECT_EQ(event_files(logdir).front(), first_path);
}

TEST(TensorBoardTest, AnUnusableDirectoryIsAUserError) {
  TempDir dir("tensorboard");
  std::ofstream(dir / "file") << "x";
  const std::string error = testing::user_error_of([&] { TensorBoardWriter writer(dir / "file/tb"); });
  EXPECT_NE(error.find("cannot create the directory " + dir / "file/tb" + " for the TensorBoard event file"),
            std::string::npos)
      << error;
  EXPECT_THROW(MetricsLog("", false, stdout, dir / "file"), UserError) << "a file, not a directory";
}

// MetricsLog writes each number of a JSON record as a scalar, at the record's step and time.
TEST(TensorBoardTest, MetricsLogWritesTheNumbersOfItsRecords) {
  TempDir dir("tensorboard");
  const std::string jsonl = dir / "run/metrics.jsonl";
  TrainMetrics m;
  m.step = 100;
  m.steps = 1500;
  m.loss = 1.23449;
  m.lr = 1e-3;
  m.grad_norm = 0.5321;
  m.tokens_per_s = 12345;
  m.mfu = 0.3121;
  m.mem_bytes = uint64_t{412} << 20;
  m.step_ms = 41.5;  // eta_s unknown: no scalar
  std::string tb_path;
  {
    FILE* out = std::tmpfile();
    MetricsLog log(jsonl, false, out, dir / "run");
    tb_path = log.tensorboard_path();
    log.progress(m);
    log.eval(100, {{"val_loss", 3.25}, {"perplexity", std::nan("")}});
    log.event(100, "checkpoint", "saved");  // no record: not a number
    log.event(100, "rollback", "back to step 100");
    log.eval(101, {{"val_loss", std::nan("")}});  // nothing known: no record
    std::fclose(out);
  }
  ASSERT_EQ(event_files(dir / "run"), std::vector<std::string>{tb_path});
  std::vector<JsonValue> json;
  std::istringstream lines(read_text(jsonl));
  for (std::string line; std::getline(lines, line);) json.push_back(json_parse(line));
  ASSERT_EQ(json.size(), 5u);

  const std::vector<std::string> records = records_of(tb_path);
  ASSERT_EQ(records.size(), 4u) << "the version, train, eval and the rollback's restart";
  EXPECT_EQ(records[1], event_scalars(json_number_of(json[0], "time"), 100,
                                      {{"train/loss", 1.23449f},
                                       {"train/lr", 1e-3f},
                                       {"train/grad_norm", 0.5321f},
                                       {"train/tokens_per_s", 12345.0f},
                                       {"train/mfu", 0.3121f},
                                       {"train/mem_bytes", 412.0f * (1 << 20)},
                                       {"train/step_ms", 41.5f}}));
  EXPECT_EQ(records[2], event_scalars(json_number_of(json[1], "time"), 100, {{"eval/val_loss", 3.25f}}));
  EXPECT_EQ(records[3], event_restart(json_number_of(json[3], "time"), 101)) << "steps after 100 are redone";

  MetricsLog none("", false, stdout, "");
  EXPECT_EQ(none.tensorboard_path(), "");
}

// TensorBoard itself (the `tensorboard` package, tests/launch/tensorboard_read.py) reads a real
// run's event files, with every CRC checked, and finds the numbers of its metrics.jsonl: a run
// killed at step 13 (checkpoint at 10), resumed, and rolled back from a NaN step 18 to 15, so
// that steps 11, 12, 16 and 17 are logged twice and TensorBoard must keep the later values.
TEST(TensorBoardCliTest, TensorBoardReadsBackALoomRun) {
  const std::string check = std::string(LOOM_PYTHON) + " -c 'import tensorboard' 2>/dev/null";
  if (std::system(check.c_str()) != 0) {
    FAIL() << "the Python package `tensorboard` is not installed for " << LOOM_PYTHON
           << ": run scripts/setup.sh (it installs tensorboard==2.20.0 with pip)";
  }
  TempDir dir("tensorboard_cli");
  const std::string run = dir / "demo";
  // A small model on one thread: a second or two on a busy machine.
  const std::string args = "train --set train.steps=20 --set optimizer.warmup_steps=5 --set train.log_every=1 --set train.eval_every=10 "
                           "--set checkpoint.every=5 --set checkpoint.async=false --set guard.rollback_after=1 "
                           "--set train.threads=1 --set train.micro_batch_size=8 --set model.n_embd=32 "
                           "--set data.addition.test_problems=100 --set train.out_dir=" + run;
  const testing::RunResult killed = testing::run_loom_env("LOOM_FAULT=kill@13", args);
  ASSERT_NE(killed.exit_code, 0) << killed.out;
  ASSERT_EQ(event_files(run).size(), 1u) << killed.out;
  const testing::RunResult resumed = testing::run_loom_env("LOOM_FAULT=nan@18", args + " --resume auto");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.out;
  EXPECT_NE(resumed.out.find("; TensorBoard events to " + run + "/events.out.tfevents."), std::string::npos)
      << resumed.out;
  EXPECT_NE(resumed.out.find("rolled back to"), std::string::npos) << resumed.out;
  ASSERT_EQ(event_files(run).size(), 2u);

  const std::string command = std::string(LOOM_PYTHON) + " " + LOOM_SOURCE_DIR +
                              "/tests/launch/tensorboard_read.py " + run + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string said;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) said.append(buf, n);
  const int status = ::pclose(pipe);
  ASSERT_EQ(status, 0) << command << "\n" << said;
  // Events: 12 train records and an evaluation (step 10) before the kill; the resume, 11 .. 17,
  // the rollback, 16 .. 20 and an evaluation (step 20) after.
  EXPECT_NE(said.find(": 28 events agree with"), std::string::npos) << said;
  // train/ loss, lr, grad_norm, tokens_per_s, mfu, mem_bytes, eta_s, step_ms at 20 steps each,
  // eval/accuracy and eval/val_loss at 2.
  EXPECT_NE(said.find("TensorBoard shows 10 tags, 164 points"), std::string::npos) << said;
}

TEST(TensorBoardCliTest, SwitchedOffOrUnwritable) {
  TempDir dir("tensorboard_cli");
  const std::string small = "train --set train.steps=2 --set optimizer.warmup_steps=1 --set train.threads=1 --set train.micro_batch_size=8 "
                            "--set model.n_embd=32 --set data.addition.test_problems=10 ";
  const testing::RunResult off =
      testing::run_loom(small + "--set metrics.tensorboard=false --set train.out_dir=" + dir / "off");
  ASSERT_EQ(off.exit_code, 0) << off.out;
  EXPECT_TRUE(event_files(dir / "off").empty());
  EXPECT_EQ(off.out.find("TensorBoard"), std::string::npos) << off.out;

  // The events go to the metrics file's directory, here a file.
  std::ofstream(dir / "taken") << "x";
  testing::expect_user_error(
      small + "--set metrics.jsonl=" + dir / "taken/metrics.jsonl --set train.out_dir=" + dir / "run",
      "cannot create the directory " + dir / "taken for the TensorBoard event file");
}

}  // namespace
}  // namespace loom
