// `loom plot` end to end: a generated metrics file of a run that was interrupted, resumed and
// rolled back (steps logged twice) drawn as a PNG with gnuplot, written in place of nothing but
// a whole image; and every kind of bad input answered with one line and exit code 2.
#include <stdlib.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "launch/loom_process.h"
#include "test_util.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using testing::expect_user_error;
using testing::run_loom;
using testing::RunResult;
using testing::TempDir;

std::string train_record(int step, double loss, double tokens_per_s, const std::string& mfu) {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "{\"time\": %d.5, \"kind\": \"train\", \"step\": %d, \"steps\": 400, \"loss\": %.6g, \"lr\": 0.001, "
                "\"grad_norm\": 0.5, \"tokens_per_s\": %.6g, \"mfu\": %s, \"mem_bytes\": 431000000, \"eta_s\": 60, "
                "\"step_ms\": 40.5}\n",
                1700000000 + step, step, loss, tokens_per_s, mfu.c_str());
  return buf;
}

// 400 steps logged every 10: the first run stops after step 250 (checkpoint at 200) and the
// second resumes from 200, logging 210 .. 250 again; a rollback at 320 relogs 310 .. 320.
std::string run_log() {
  std::string s;
  auto loss_at = [](int step, double offset) { return 2.0 + 8.0 * std::exp(-step / 60.0) + offset; };
  for (int step = 10; step <= 250; step += 10) {
    s += train_record(step, loss_at(step, 0.3), 12000 + 40 * (step % 30), "0.31");
    if (step % 100 == 0) {
      s += "{\"time\": 1700000100, \"kind\": \"eval\", \"step\": " + std::to_string(step) +
           ", \"val_loss\": " + std::to_string(loss_at(step, 0.5)) + ", \"perplexity\": 100}\n";
      s += "{\"time\": 1700000100, \"kind\": \"event\", \"step\": " + std::to_string(step) +
           ", \"event\": \"checkpoint\", \"message\": \"saved\"}\n";
    }
  }
  s += "{\"time\": 1700000500, \"kind\": \"event\", \"step\": 200, \"event\": \"resume\", \"message\": \"resumed "
       "from step-00000200\"}\n";
  s += "\n";  // blank lines are allowed
  for (int step = 210; step <= 320; step += 10) s += train_record(step, loss_at(step, 0), 13000, "0.33");
  s += "{\"time\": 1700000600, \"kind\": \"event\", \"step\": 300, \"event\": \"rollback\", \"message\": \"3 NaN "
       "steps\"}\n";
  s += "{\"time\": 1700000600, \"kind\": \"hardware\", \"step\": 300, \"temperature\": 80}\n";  // unknown kind
  for (int step = 310; step <= 400; step += 10) {
    s += train_record(step, loss_at(step, 0), 13000 - 10 * (step % 50), step == 330 ? "null" : "0.33");
    if (step % 100 == 0) {
      s += "{\"time\": 1700000700, \"kind\": \"eval\", \"step\": " + std::to_string(step) +
           ", \"val_loss\": " + std::to_string(loss_at(step, 0.2)) + "}\n";
    }
  }
  return s;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void expect_png(const std::string& path) {
  const std::string png = read_text(path);
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1A\n", 8)) << path;
  EXPECT_GT(png.size(), 20000u) << path << ": two panels of curves, axes and text";
}

TEST(PlotCliTest, DrawsARunWithRepeatedStepsAsAPng) {
  TempDir dir("plot");
  const std::string input = dir / "run/metrics.jsonl";
  fs::create_directories(dir / "run");
  std::ofstream(input) << run_log();

  RunResult r = run_loom("plot " + input + " --out " + dir / "plots/loss.png --title 'demo run' --log-loss");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  // 40 distinct steps; 2 + 1 evaluations; 2 checkpoints, a resume and a rollback.
  EXPECT_NE(r.out.find("wrote " + dir / "plots/loss.png: 40 steps (10 .. 400), 3 evaluations, 4 events; title "
                       "\"demo run\"\n"),
            std::string::npos)
      << r.out;
  expect_png(dir / "plots/loss.png");

  r = run_loom("plot " + input);  // the default output: the input's name with .png
  ASSERT_EQ(r.exit_code, 0) << r.out;
  expect_png(dir / "run/metrics.png");
  EXPECT_NE(r.out.find("; title \"run\"\n"), std::string::npos) << "the run's name, its directory's:\n" << r.out;
  for (const auto& entry : fs::directory_iterator(dir / "run")) {
    const std::string name = entry.path().filename().string();
    EXPECT_TRUE(name == "metrics.jsonl" || name == "metrics.png") << "left behind: " << name;
  }
}

TEST(PlotCliTest, ARecordBeingWrittenIsLeftOutAndOneRecordIsEnough) {
  TempDir dir("plot");
  const std::string input = dir / "live.jsonl";
  std::ofstream(input) << train_record(1, 5, 100, "null") << train_record(2, 4, 100, "null")
                       << "{\"time\": 1700000003, \"kind\": \"tr";
  const RunResult r = run_loom("plot " + input + " --out " + dir / "live.png");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find(": 2 steps (1 .. 2)"), std::string::npos) << r.out;
  expect_png(dir / "live.png");

  std::ofstream(input) << "{\"kind\": \"train\", \"step\": 7, \"loss\": 3.5}\n";  // one record, nothing else
  const RunResult one = run_loom("plot " + input + " --out " + dir / "one.png --log-loss");
  ASSERT_EQ(one.exit_code, 0) << one.out;
  EXPECT_NE(one.out.find(": 1 step (7 .. 7), 0 evaluations, 0 events"), std::string::npos) << one.out;
}

TEST(PlotCliTest, HeldOutAccuracyIsDrawnOnTheRightHandAxis) {
  TempDir dir("plot");
  const std::string input = dir / "addition.jsonl";
  {
    std::ofstream out(input);
    for (int step = 100; step <= 500; step += 100) {
      out << train_record(step, 2.0 - step / 400.0, 40000, "0.5");
      out << "{\"time\": 1700000000, \"kind\": \"eval\", \"step\": " << step << ", \"accuracy\": " << step / 500.0
          << "}\n";
    }
  }
  const RunResult r = run_loom("plot " + input + " --out " + dir / "addition.png");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find(": 5 steps (100 .. 500), 5 evaluations, 0 events; title \"" + dir.path().filename().string() +
                       " (addition.jsonl)\""),
            std::string::npos)
      << "a file not named metrics.jsonl is named in the title:\n" << r.out;
  expect_png(dir / "addition.png");
}

// train.eval_task's scores (NAME/acc, NAME/acc_norm, NAME/exact_match) share the accuracy axis;
// their standard errors and losses are not drawn there.
TEST(PlotCliTest, EvalTaskScoresAreDrawnOnTheAccuracyAxis) {
  TempDir dir("plot");
  auto write_log = [&](const std::string& path, bool scores) {
    std::ofstream out(path);
    for (int step = 100; step <= 500; step += 100) {
      out << train_record(step, 2.0 - step / 400.0, 40000, "0.5");
      out << "{\"time\": 1700000000, \"kind\": \"eval\", \"step\": " << step << ", \"hs/acc_stderr\": 0.01"
          << ", \"wiki_val/loss\": 3.5";
      if (scores) out << ", \"hs/acc\": " << step / 1000.0 << ", \"hs/acc_norm\": " << step / 800.0 << ", \"qa/exact_match\": 0.2";
      out << "}\n";
    }
  };
  write_log(dir / "tasks.jsonl", true);
  write_log(dir / "none.jsonl", false);
  const RunResult r = run_loom("plot " + dir / "tasks.jsonl --out " + dir / "tasks.png --title same");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find(": 5 steps (100 .. 500), 5 evaluations, 0 events"), std::string::npos) << r.out;
  expect_png(dir / "tasks.png");
  ASSERT_EQ(run_loom("plot " + dir / "none.jsonl --out " + dir / "none.png --title same").exit_code, 0);
  EXPECT_NE(read_text(dir / "tasks.png"), read_text(dir / "none.png")) << "the scores' three lines are drawn";
}

// Events at the first step and a few steps apart: their names share labels (not checked here:
// look at the image) and the drawing succeeds.
TEST(PlotCliTest, CrowdedEventsAreDrawn) {
  TempDir dir("plot");
  fs::create_directories(dir / "crowded");
  const std::string input = dir / "crowded/metrics.jsonl";
  {
    std::ofstream out(input);
    for (int step = 1; step <= 200; ++step) out << train_record(step, 10.0 / step + 2, 5000 + step, "0.4");
    for (const auto& [step, name] : std::vector<std::pair<int, std::string>>{
             {1, "resume"}, {50, "skip"}, {51, "skip"}, {52, "rollback"}, {52, "resume"}, {200, "stop"}}) {
      out << "{\"time\": 1, \"kind\": \"event\", \"step\": " << step << ", \"event\": \"" << name
          << "\", \"message\": \"x\"}\n";
    }
  }
  const RunResult r = run_loom("plot " + input);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find(": 200 steps (1 .. 200), 0 evaluations, 6 events; title \"crowded\""), std::string::npos)
      << r.out;
  expect_png(dir / "crowded/metrics.png");
}

TEST(PlotCliTest, BadInputIsOneLine) {
  TempDir dir("plot");
  const std::string bad = dir / "bad.jsonl";
  std::ofstream(bad) << train_record(10, 5, 100, "0.1") << "\n"
                     << "{\"time\": 1, \"kind\": \"train\", \"step\": 20, \n" << train_record(30, 4, 100, "0.1");
  expect_user_error("plot " + bad, bad + ":3: invalid JSON at byte offset");

  std::ofstream(bad) << train_record(10, 5, 100, "0.1") << "[1, 2]\n";
  expect_user_error("plot " + bad, bad + ":2: expected a JSON object");
  std::ofstream(bad) << "{\"time\": 1, \"step\": 3}\n";
  expect_user_error("plot " + bad, bad + ":1: expected a string \"kind\"");
  std::ofstream(bad) << "{\"kind\": \"train\", \"step\": 2.5, \"loss\": 1}\n";
  expect_user_error("plot " + bad, bad + ":1: expected an integer \"step\"");
  std::ofstream(bad) << "{\"kind\": \"train\", \"step\": 2, \"loss\": \"low\"}\n";
  expect_user_error("plot " + bad, bad + ":1: expected \"loss\" to be a number or null, found a string");
  std::ofstream(bad) << "{\"kind\": \"event\", \"step\": 2, \"event\": \"resume\"}\n";
  expect_user_error("plot " + bad, "has no training records");
  std::ofstream(bad) << "{\"kind\": \"train\", \"step\": 2, \"loss\": null}\n";
  expect_user_error("plot " + bad, "has no training record with a finite loss");

  expect_user_error("plot " + dir / "missing.jsonl", "cannot read metrics file");
  expect_user_error("plot", "takes one metrics file");
  expect_user_error("plot a.jsonl b.jsonl", "takes one metrics file");
  expect_user_error("plot " + bad + " --colour red", "unknown option --colour");
  EXPECT_FALSE(fs::exists(dir / "bad.png"));
}

TEST(PlotCliTest, MissingGnuplotSaysWhatToInstall) {
  TempDir dir("plot");
  const std::string input = dir / "metrics.jsonl";
  std::ofstream(input) << train_record(1, 5, 100, "0.1");
  const char* saved = std::getenv("PATH");
  const std::string path = saved != nullptr ? saved : "";
  ::setenv("PATH", dir.str().c_str(), 1);  // loom and the shell are run by absolute path
  expect_user_error("plot " + input, "install it with `apt-get install gnuplot-nox`");
  ::setenv("PATH", path.c_str(), 1);
  EXPECT_FALSE(fs::exists(dir / "metrics.png"));
}

TEST(PlotCliTest, HelpListsEveryOption) {
  const RunResult r = run_loom("plot --help");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  for (const char* option : {"--out PNG", "--title TEXT", "--log-loss", "--help"}) {
    EXPECT_NE(r.out.find(option), std::string::npos) << option << "\n" << r.out;
  }
  const RunResult usage = run_loom("--help");
  EXPECT_NE(usage.out.find("  plot "), std::string::npos) << usage.out;
}

}  // namespace
}  // namespace loom
