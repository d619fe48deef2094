// End-to-end runs of the `loom` executable: a tiny training run and generation, the same losses
// at one and two threads, and every kind of bad input answered with one sentence on stderr and
// exit code 2 (never a crash).
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "core/base/device.h"
#include "core/base/file_io.h"
#include "launch/loom_process.h"
#include "test_util.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using testing::expect_user_error;
using testing::run_loom;
using testing::RunResult;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("loom_cli_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(CliTest, TinyTrainingRunLearnsSavesAndGenerates) {
  const std::string out = (dir_ / "run").string();
  RunResult r = run_loom("train --set train.steps=60 --set optimizer.warmup_steps=10 --set train.log_every=20 --set train.eval_every=0 "
                         "--set data.addition.digits=2 --set data.addition.test_problems=50 "
                         "--set train.micro_batch_size=32 --set train.out_dir=" + out);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("step    20/60 | loss"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("held-out exact match"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("samples"), std::string::npos) << r.out;
  ASSERT_TRUE(fs::exists(out + "/model.loom"));

  r = run_loom("generate --model " + out + "/model.loom --prompt 12+34= --num-samples 3 --temperature 1 --top-k 3 --seed 5");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 3) << r.out;
  EXPECT_EQ(r.out.rfind("12+34=", 0), 0u) << r.out;
  // 2-digit problems: a 6-token prompt and a 3-digit reversed sum fill the model's 8 positions.
  RunResult greedy = run_loom("generate --model " + out + "/model.loom --prompt 12+34=");
  ASSERT_EQ(greedy.exit_code, 0) << greedy.out;
  EXPECT_NE(greedy.out.find("(the sum, digits reversed:"), std::string::npos) << greedy.out;
  EXPECT_EQ(greedy.out.find("12+34="), 0u) << greedy.out;
  EXPECT_EQ(greedy.out.find(' '), 9u) << "three answer digits expected: " << greedy.out;
  expect_user_error("generate --model " + out + "/model.loom --prompt 12+34= --max-new-tokens 4", "--max-new-tokens is 4 but must be in 1 .. 3");
  RunResult again = run_loom("generate --model " + out + "/model.loom --prompt 12+34= --num-samples 3 --temperature 1 --top-k 3 --seed 5");
  EXPECT_EQ(again.out, r.out) << "same seed, same samples";

  // A run directory, a checkpoint directory, a directory of checkpoints: the same model.
  for (const std::string& model : {out, out + "/checkpoints/step-00000060", out + "/checkpoints"}) {
    RunResult same = run_loom("generate --model " + model + " --prompt 12+34=");
    EXPECT_EQ(same.exit_code, 0) << model << "\n" << same.out;
    EXPECT_EQ(same.out, greedy.out) << model;
  }
  fs::create_directories(dir_ / "empty");
  expect_user_error("generate --model " + (dir_ / "empty").string() + " --prompt 12+34=",
                    "holds no model: expected a model file (model.loom), a checkpoint (manifest.pb) or checkpoints");
  expect_user_error("generate --model " + (dir_ / "nothing").string() + " --prompt 1", "does not exist");
  // Export takes the same: a model file as well as a checkpoint.
  RunResult exported = run_loom("ckpt export " + out + "/model.loom " + (dir_ / "m.safetensors").string());
  EXPECT_EQ(exported.exit_code, 0) << exported.out;
  EXPECT_TRUE(fs::exists(dir_ / "m.safetensors"));
  exported = run_loom("ckpt export " + out + " " + (dir_ / "r.safetensors").string());
  EXPECT_EQ(exported.exit_code, 0) << exported.out;
  expect_user_error("generate --model " + out + "/model.loom --prompt 12*34=", "'*' at offset 2");
    expect_user_error("generate --model " + out + "/model.loom --prompt 12+34= --top-k -1", "--top-k is -1");
}

// The "loss" and "grad_norm" fields of every train record of a metrics.jsonl, as written (the
// shortest decimals that read back to the same double, so equal text is equal bits).
std::vector<std::string> losses_and_grad_norms(const std::string& metrics_path) {
  const std::string text = read_file(metrics_path, "metrics");
  const std::regex field(R"re("(loss|grad_norm)": ([^,}]+))re");
  std::vector<std::string> values;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), field); it != std::sregex_iterator(); ++it) {
    values.push_back((*it)[1].str() + " " + (*it)[2].str());
  }
  return values;
}

// train.threads changes no bit of the losses and gradient norms. 65 x 8 = 520 tokens per step at
// width 256: before the matmul was tiled, OpenBLAS blocked dweight's 520-long sums differently
// at two threads and the gradient norm of step 1 differed (7.733985509 against 7.733985502).
TEST_F(CliTest, TrainingGivesTheSameLossesAtOneAndTwoThreads) {
  std::vector<std::string> runs[2];
  for (int threads : {1, 2}) {
    const std::string out = (dir_ / ("threads" + std::to_string(threads))).string();
    RunResult r = run_loom("train --fresh --set model.n_layer=1 --set model.n_embd=256 --set train.micro_batch_size=65 "
                           "--set train.grad_accum_steps=1 --set train.steps=2 --set optimizer.warmup_steps=1 "
                           "--set train.log_every=1 --set train.eval_every=0 --set train.samples=0 "
                           "--set train.threads=" + std::to_string(threads) + " --set train.out_dir=" + out);
    ASSERT_EQ(r.exit_code, 0) << r.out;
    runs[threads - 1] = losses_and_grad_norms(out + "/metrics.jsonl");
  }
  EXPECT_EQ(runs[0].size(), 4u);  // loss and grad_norm of 2 steps
  EXPECT_EQ(runs[1], runs[0]);
}

TEST_F(CliTest, BadConfigsAndFlagsAreOneClearSentence) {
  const fs::path bad = dir_ / "bad.pbtxt";
  std::ofstream(bad) << "model {\n  n_layer: 2\n  widht: 64\n}\n";
  expect_user_error("train " + bad.string(), bad.string() + ":3:");
  expect_user_error("train " + bad.string(), "widht");
  expect_user_error("train " + (dir_ / "missing.pbtxt").string(), "cannot read config file");
  expect_user_error("train --set model.n_embd=0", "model.n_embd is 0 but must be a positive integer");
  expect_user_error("train --set model.n_layer=-2", "model.n_layer is -2");
  expect_user_error("train --set model.n_head=5", "model.n_head = 5 must divide model.n_embd = 128");
  expect_user_error("train --set model.vocab_size=8", "model.vocab_size is 8");
  expect_user_error("train --set model.seq_len=4", "model.seq_len is 4");
  expect_user_error("train --set model.colour=red", "no field 'colour'");
  expect_user_error("train --set train.steps=ten", "'ten' is not a valid");
  expect_user_error("train --frobnicate", "unknown option --frobnicate");
  expect_user_error("train --time-budget 3h50 --set train.steps=1 --set optimizer.warmup_steps=1",
                    "--time-budget is '3h50' but must be a duration such as 90s, 20m, 3h50m or 2d");
  expect_user_error("train --set guard.collective_timeout_s=0", "guard.collective_timeout_s is 0 but must be a number of seconds");
  expect_user_error("train --set guard.collective_timeout_s=inf", "guard.collective_timeout_s is inf but must be");
  expect_user_error("train --set optimizer.lr=1e30", "optimizer.lr is 1e+30 but must be a number in (0, 1]");
  expect_user_error("train --set train.threads=100000", "train.threads is 100000 but must be in 0 .. 1024");
  expect_user_error("train /dev/zero", "config file /dev/zero is not a regular file");
  expect_user_error("train " + dir_.string(), "is a directory, but must be a .pbtxt text file");
  expect_user_error("generate --threads -1 --model x --prompt 1", "--threads is -1 but must be in 0 .. 1024");
  // Sizes past what 64 bits or the host hold: refused before anything is allocated.
  expect_user_error("train --set model.n_layer=783 --set model.n_embd=62661870 --set model.n_head=1",
                    "the model is too large: the parameter count overflows 64-bit sizes");
  expect_user_error("train --set model.n_layer=1000000000", "but the host has");
  expect_user_error("train --set train.micro_batch_size=2147483647", "the tokens of a micro-batch");
  // CUDA asked for where there is none: a machine without a GPU (CI) or a build without CUDA.
  if (device_count() == 0) {
    expect_user_error("train --set train.device=DEVICE_CUDA --set train.steps=1 --set optimizer.warmup_steps=1",
#ifdef LOOM_HAS_CUDA
                      "train.device is DEVICE_CUDA but this process has no GPU"
#else
                      "train.device is DEVICE_CUDA but this loom was built without CUDA"
#endif
    );
  }
  expect_user_error("train --set train.device=GPU", "'GPU'");
  expect_user_error("generate --prompt 1+1= --model " + (dir_ / "none.loom").string(), "does not exist (give a model file, a checkpoint or a run directory)");
  expect_user_error("generate", "needs --prompt");

  const fs::path garbage = dir_ / "garbage.loom";
  std::ofstream(garbage) << "this is not a model";
  expect_user_error("generate --prompt 1+1= --model " + garbage.string(), "is not a Loom model file");
  std::ofstream(garbage) << "LOOM";
  expect_user_error("generate --prompt 1+1= --model " + garbage.string(), "is truncated or corrupt");

  RunResult r = run_loom("frobnicate");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown command 'frobnicate'"), std::string::npos) << r.err;
  r = run_loom("train --help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("--set"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace loom
