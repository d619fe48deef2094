// `loom train` run again where an earlier run left its checkpoints and metrics: the defaults
// resume or refuse, never delete (launch/earlier_run.h), and a new run's metrics never mix with an
// earlier run's.
#include "launch/earlier_run.h"

#include <filesystem>
#include <fstream>
#include <string>

#include "core/base/check.h"
#include "core/base/file_io.h"
#include "launch/loom_process.h"
#include "test_util.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using testing::expect_user_error;
using testing::run_loom;
using testing::RunResult;

class EarlierRunTest : public ::testing::Test {
 protected:
  std::string train(const std::string& extra) const {
    return "train --set train.steps=6 --set optimizer.warmup_steps=2 --set train.log_every=3 --set train.eval_every=0 --set train.samples=0 "
           "--set data.addition.digits=1 --set data.addition.test_problems=5 --set train.micro_batch_size=4 "
           "--set model.n_embd=16 --set train.threads=1 --set train.out_dir=" + (dir_ / "run").string() + " " + extra;
  }
  static std::string read(const fs::path& p) { return read_file(p.string(), "test file"); }
  testing::TempDir tmp_{"earlier_run"};
  const fs::path dir_ = tmp_.path();
};

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

TEST_F(EarlierRunTest, RunningAgainResumesTheSameModel) {
  RunResult first = run_loom(train("--stop-after-steps 3"));
  ASSERT_EQ(first.exit_code, 0) << first.out;
  RunResult again = run_loom(train(""));
  ASSERT_EQ(again.exit_code, 0) << again.out;
  EXPECT_NE(again.out.find("resumed from " + (dir_ / "run/checkpoints/step-00000003").string() + ": step 3"),
            std::string::npos)
      << again.out;
  EXPECT_NE(again.out.find("step     6/6 | loss"), std::string::npos) << again.out;
  // One run, resumed: its records continue in the same file.
  const std::string metrics = read(dir_ / "run/metrics.jsonl");
  EXPECT_EQ(count(metrics, "\"kind\": \"train\""), 2u) << metrics;
  EXPECT_FALSE(fs::exists(dir_ / "run/metrics.jsonl.1"));
}

TEST_F(EarlierRunTest, AnotherModelIsRefusedAndNothingIsDeleted) {
  ASSERT_EQ(run_loom(train("")).exit_code, 0);
  const std::string before = read(dir_ / "run/metrics.jsonl");
  expect_user_error(train("--set model.n_layer=3"),
                    "was saved from a different model: model.n_layer: checkpoint 2, config 3; loom train resumes the "
                    "checkpoints under");
  expect_user_error(train("--set model.n_layer=3"), "pass --fresh");
  EXPECT_TRUE(fs::exists(dir_ / "run/checkpoints/step-00000006/manifest.pb"));
  EXPECT_EQ(read(dir_ / "run/metrics.jsonl"), before);
  // Naming no resume does not mean "delete": only --fresh does.
  expect_user_error(train("--resume none"), "pass --fresh to start afresh");
  expect_user_error(train("--fresh --resume auto"), "pass one of them, not both");
  EXPECT_TRUE(fs::exists(dir_ / "run/checkpoints/step-00000006/manifest.pb"));
}

TEST_F(EarlierRunTest, FreshReplacesTheEarlierRunAtItsFirstSave) {
  ASSERT_EQ(run_loom(train("")).exit_code, 0);
  RunResult fresh = run_loom(train("--set model.n_layer=3 --set train.steps=4 --fresh"));
  ASSERT_EQ(fresh.exit_code, 0) << fresh.out;
  EXPECT_NE(fresh.out.find("--fresh: " + (dir_ / "run/checkpoints").string() + " holds 1 checkpoint"),
            std::string::npos)
      << fresh.out;
  EXPECT_FALSE(fs::exists(dir_ / "run/checkpoints/step-00000006"));
  EXPECT_TRUE(fs::exists(dir_ / "run/checkpoints/step-00000004/manifest.pb"));
  const std::string metrics = read(dir_ / "run/metrics.jsonl");
  EXPECT_EQ(metrics.find("\"step\": 6"), std::string::npos) << "the earlier run's records are gone:\n" << metrics;
  EXPECT_NE(metrics.find("\"step\": 4"), std::string::npos) << metrics;
  int event_files = 0;
  for (const auto& entry : fs::directory_iterator(dir_ / "run")) {
    event_files += entry.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
  }
  EXPECT_EQ(event_files, 1) << "the earlier run's event file is gone, this run's is there";
}

TEST_F(EarlierRunTest, MetricsWithoutACheckpointAreMovedAsideNotMixed) {
  fs::create_directories(dir_ / "run");
  const std::string old_record = "{\"time\": 1, \"kind\": \"train\", \"step\": 99}\n";
  std::ofstream(dir_ / "run/metrics.jsonl") << old_record;
  std::ofstream(dir_ / "run/metrics.jsonl.1") << "an older one\n";
  std::ofstream(dir_ / "run/events.out.tfevents.0000000001.host.1") << "old events";
  RunResult r = run_loom(train(""));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("moved to " + (dir_ / "run/metrics.jsonl.2").string()), std::string::npos) << r.out;
  EXPECT_EQ(read(dir_ / "run/metrics.jsonl.2"), old_record);
  EXPECT_EQ(read(dir_ / "run/metrics.jsonl.1"), "an older one\n");
  EXPECT_EQ(read(dir_ / "run/metrics.jsonl").find("\"step\": 99"), std::string::npos);
  // TensorBoard shows the earlier events as a run of their own.
  EXPECT_EQ(read(dir_ / "run/earlier-run-1/events.out.tfevents.0000000001.host.1"), "old events");
  EXPECT_FALSE(fs::exists(dir_ / "run/events.out.tfevents.0000000001.host.1"));
}

TEST(PlanStart, ResumeIsTheDefaultAndNoneNeedsFreshOverCheckpoints) {
  EarlierRun none;
  EXPECT_EQ(plan_start("", false, none).resume_spec, "auto");
  EXPECT_EQ(plan_start("none", false, none).resume_spec, "none");
  EXPECT_EQ(plan_start("", true, none).resume_spec, "none");
  EXPECT_TRUE(plan_start("", true, none).fresh);
  EarlierRun some;
  some.checkpoint_root = "ck";
  some.checkpoints = {"ck/step-00000002"};
  EXPECT_EQ(plan_start("", false, some).resume_spec, "auto");
  EXPECT_THROW(plan_start("none", false, some), UserError);
  EXPECT_EQ(plan_start("", true, some).resume_spec, "none");
  EXPECT_EQ(plan_start("ck/step-00000002", false, some).resume_spec, "ck/step-00000002");
}

TEST(PlanStart, InitFromStartsANewRunAndIsRefusedWhereARunWouldBeResumed) {
  EarlierRun none;
  const StartPlan plan = plan_start("", false, none, "base/model.loom");
  EXPECT_EQ(plan.resume_spec, "none");
  EXPECT_EQ(plan.init_from, "base/model.loom");
  EXPECT_FALSE(plan.fresh);
  EXPECT_EQ(testing::user_error_of([&] { plan_start("auto", false, none, "base/model.loom"); }),
            "--init-from starts a new run from base/model.loom and --resume auto continues one: pass one of them, not both");
  EarlierRun some;
  some.checkpoint_root = "ck";
  some.checkpoints = {"ck/step-00000008"};
  EXPECT_EQ(testing::user_error_of([&] { plan_start("", false, some, "base/model.loom"); }),
            "--init-from starts a new run, but ck holds 1 checkpoint of an earlier run (newest ck/step-00000008): run "
            "again without --init-from to resume it, add --fresh to start over from base/model.loom (the earlier "
            "checkpoints are deleted at this run's first save), or choose another train.out_dir");
  const StartPlan over = plan_start("", true, some, "base/model.loom");
  EXPECT_EQ(over.resume_spec, "none");
  EXPECT_TRUE(over.fresh);
  // Run again without the flag, the run started from the model resumes.
  EXPECT_EQ(plan_start("", false, some).resume_spec, "auto");
}

}  // namespace
}  // namespace loom
