// `loom train` finds what it can before the first step: a validation split too small for one
// sample, a tokenizer that does not load, a directory it cannot write into. Each is one
// sentence and exit 2 with no step trained (before, the first two surfaced only after training).
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "launch/loom_process.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using testing::run_loom;
using testing::RunResult;

class StartChecksTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("loom_start_checks_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "text");
    // Enough text for a tokenizer and a training split; a validation split of a few tokens.
    // Blank-line separated documents: 199 long ones, and one of two words that the 0.5% held out
    // for validation gets (the last).
    std::ofstream text(dir_ / "text/a.txt");
    for (int i = 0; i < 199; ++i) {
      for (int j = 0; j < 10; ++j) text << "the quick brown fox " << i << " jumps over the lazy dog " << j << "\n";
      text << "\n";
    }
    text << "short one\n";
    text.close();
    RunResult r = run_loom("prepare --input " + (dir_ / "text").string() + " --documents blank-line --vocab-size 300 "
                           "--val-fraction 0.005 "
                           "--threads 1 --out " + (dir_ / "data").string());
    ASSERT_EQ(r.exit_code, 0) << r.out;
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static std::string train(const std::string& extra) {
    return "train " + std::string(LOOM_SOURCE_DIR) + "/configs/text.pbtxt --set data.tokens.source.0.path=" +
           (dir_ / "data").string() + " --set data.tokens.seq_len=64 --set model.n_layer=1 --set model.n_embd=32 " +
           "--set train.steps=4 --set optimizer.warmup_steps=1 --set train.threads=1 --set train.micro_batch_size=2 " +
           "--set train.out_dir=" + (dir_ / "run").string() + " --fresh " + extra;
  }
  void SetUp() override { fs::remove_all(dir_ / "run"); }
  static void expect_refused_before_training(const RunResult& r, const std::string& needle) {
    EXPECT_EQ(r.exit_code, 2) << r.out;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_EQ(r.out.find("step "), std::string::npos) << "nothing trained:\n" << r.out;
    EXPECT_FALSE(fs::exists(dir_ / "run/model.loom"));
  }
  static fs::path dir_;
};

fs::path StartChecksTest::dir_;

TEST_F(StartChecksTest, AValidationSplitTooSmallForOneSampleIsFoundAtStart) {
  // The evaluation would come only at the end (eval_every 0): the split is checked at start.
  expect_refused_before_training(run_loom(train("--set train.eval_every=0")), "fewer than one sample");
  // Without evaluations the split is not needed.
  RunResult ok = run_loom(train("--set data.tokens.eval_batches=0 --set train.samples=0"));
  EXPECT_EQ(ok.exit_code, 0) << ok.out;
}

TEST_F(StartChecksTest, ABrokenTokenizerIsFoundAtStart) {
  std::ofstream(dir_ / "broken.model") << "not a model";
  expect_refused_before_training(
      run_loom(train("--set data.tokens.eval_batches=0 --set data.tokens.tokenizer=" + (dir_ / "broken.model").string())),
      "is not a SentencePiece model");
}

TEST_F(StartChecksTest, ADirectoryThatCannotBeWrittenIsFoundAtStart) {
  expect_refused_before_training(run_loom(train("--set data.tokens.eval_batches=0 --set checkpoint.dir=/proc/loom")),
                                 "cannot write into /proc/loom");
}

}  // namespace
}  // namespace loom
