// `loom eval` end to end on a model file of the addition demo's shape: the table and the JSON
// (the same numbers as the evaluations run in this process), and bad input: one sentence naming
// FILE:LINE, exit code 2, no JSON file left behind.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoints/model_file.h"
#include "core/config.h"
#include "core/decoder.h"
#include "data/json.h"
#include "launch/eval_runner.h"
#include "launch/loom_process.h"
#include "launch/run_setup.h"
#include "launch/run_shape.h"
#include "parallel/solo_communicator.h"
#include "test_util.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using testing::expect_user_error;
using testing::run_loom;
using testing::TempDir;

class EvalCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cfg_ = resolve_run_config("", {"model.n_layer=2", "model.n_head=4", "model.n_embd=32"});
    model_ = std::make_unique<GPT>(model_config_of(cfg_));
    model_->init_weights(5);
    model_path_ = dir_ / "model.loom";
    save_model_file(model_path_, config_to_text(cfg_), *model_);
    mc_ = write("mc.jsonl",
                "{\"context\": \"12+34=\", \"choices\": [\"64\", \"2\", \"640\"], \"gold\": 0}\n"
                "{\"context\": \"9+9=\", \"choices\": [\"81\", \"8\"], \"gold\": 0}\n"
                "{\"context\": \"5\", \"choices\": [\"+5=01\", \"=\", \"55\"], \"gold\": 2}\n");
  }

  std::string write(const std::string& name, const std::string& text) {
    const std::string path = dir_ / name;
    std::ofstream(path) << text;
    return path;
  }

  static std::string read(const std::string& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  static double number(const JsonValue& object, const char* key) {
    const JsonValue* v = object.find(key);
    EXPECT_NE(v, nullptr) << key;
    return v ? std::strtod(v->text.c_str(), nullptr) : NAN;
  }

  TempDir dir_{"eval_cli"};
  config::RunConfig cfg_;
  std::unique_ptr<GPT> model_;
  std::string model_path_, mc_;
};

TEST_F(EvalCliTest, PrintsATableAndWritesTheSameNumbersAsJson) {
  const std::string json = dir_ / "results.json";
  const testing::RunResult r = run_loom("eval " + model_path_ + " --multiple-choice " + mc_ +
                                        " --delimiter= --addition 3 --limit 40 --json " + json + " --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  for (const char* expected : {"multiple_choice", "acc_norm", "addition", "exact_match", "stderr", "layout tp=1 pp=1 dp=1"}) {
    EXPECT_NE(r.out.find(expected), std::string::npos) << expected << "\n" << r.out;
  }
  const JsonValue results = json_parse(read(json));
  const JsonValue* tasks = results.find("tasks");
  ASSERT_NE(tasks, nullptr);
  ASSERT_EQ(tasks->array.size(), 2u);
  const JsonValue& mc = tasks->array[0];
  EXPECT_EQ(mc.find("task")->text, "multiple_choice");
  EXPECT_EQ(number(mc, "size"), 3);

  // The same evaluations in this process.
  GPT* chunk = model_.get();
  parallel::SoloCommunicator one("one");
  const AdditionTask task = make_task(cfg_);
  const TextCodec codec = addition_codec(task);
  const ChoiceResult want = evaluate_multiple_choice(LayoutModel{{&chunk, 1}, &one, 8}, codec,
                                                     read_choice_docs(mc_, 0), mc_, "");
  EXPECT_DOUBLE_EQ(number(mc, "acc"), want.acc.mean);
  EXPECT_DOUBLE_EQ(number(mc, "acc_stderr"), want.acc.stderr_of_mean);
  EXPECT_DOUBLE_EQ(number(mc, "acc_norm"), want.acc_norm.mean);
  EXPECT_DOUBLE_EQ(number(mc, "acc_norm_stderr"), want.acc_norm.stderr_of_mean);
  const JsonValue& addition = tasks->array[1];
  EXPECT_EQ(addition.find("task")->text, "addition");
  EXPECT_EQ(number(addition, "size"), 40);
  EXPECT_DOUBLE_EQ(number(addition, "exact_match"), evaluate_addition(*model_, one, task, 40).mean);
  EXPECT_FALSE(fs::exists(json + ".tmp")) << "no temporary file is left";
}

TEST_F(EvalCliTest, ExactMatchFile) {
  // The model's own greedy answer is right, another is not.
  const std::vector<int32_t> prompt = make_task(cfg_).encode("12+34=");
  SamplingSettings greedy;
  const std::vector<int32_t> ids = generate_tokens(*model_, prompt, 2, 1, greedy)[0];
  const std::string answer = make_task(cfg_).decode(ids.data(), 2);
  const std::string em = write("em.jsonl", "{\"prompt\": \"12+34=\", \"answer\": \"" + answer +
                                               "\"}\n{\"prompt\": \"12+34=\", \"answer\": \"" +
                                               (answer == "00" ? "11" : "00") + "\"}\n");
  const std::string json = dir_ / "em.json";
  const testing::RunResult r = run_loom("eval " + model_path_ + " --exact-match " + em + " --json " + json);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const JsonValue results = json_parse(read(json));
  EXPECT_EQ(number(results.find("tasks")->array[0], "exact_match"), 0.5) << r.out;
}

TEST_F(EvalCliTest, BadInputIsOneSentenceAndWritesNothing) {
  const std::string json = dir_ / "never.json";
  const std::string good = "{\"context\": \"1\", \"choices\": [\"2\", \"3\"], \"gold\": 0}\n";
  struct Case {
    std::string line, expected;
  };
  for (const Case& c : {Case{"{\"context\": \"1\", \"choices\": [\"2\", \"3\"], \"gold\": 5}",
                             "bad.jsonl:2: the gold index 5 is out of range: the document has 2 choices"},
                        Case{"{\"context\": \"1\", \"choices\": [], \"gold\": 0}", "bad.jsonl:2: \"choices\" is empty"},
                        Case{"{\"context\": \"1\", \"gold\": 0}", "bad.jsonl:2: no field \"choices\" or \"endings\""},
                        Case{"{\"context\": \"1\", ", "bad.jsonl:2: invalid JSON at byte offset"}}) {
    const std::string bad = write("bad.jsonl", good + c.line + "\n");
    expect_user_error("eval " + model_path_ + " --multiple-choice " + bad + " --delimiter= --json " + json, c.expected);
    EXPECT_FALSE(fs::exists(json)) << c.expected;
  }
  // A text the model's alphabet cannot encode (the default delimiter is a space).
  expect_user_error("eval " + model_path_ + " --multiple-choice " + mc_ + " --json " + json,
                    "mc.jsonl:1: cannot encode the text with the addition task's alphabet");
  EXPECT_FALSE(fs::exists(json));
  expect_user_error("eval " + model_path_, "loom eval needs a task");
  expect_user_error("eval " + (dir_ / "absent.loom") + " --addition 3", "does not exist");
  expect_user_error("eval " + model_path_ + " --addition 3 --json " + (dir_ / "no/such/dir/out.json"),
                    "does not exist");
  expect_user_error("eval " + model_path_ + " --addition 3 --set parallel.tp=2",
                    "the layout parallel.tp x pp x dp = 2 x 1 x 1 needs 2 processes but the job has 1");
  expect_user_error("eval " + model_path_ + " --loss " + (dir_ / "nodata"), "is not a directory");
}

// train.eval_task: the tasks run at their steps and land in the metrics as <name>/<metric>; a bad
// task file stops the run before it is built (no directory, no metrics written).
TEST_F(EvalCliTest, TrainingEvaluatesItsTasksIntoTheMetrics) {
  const std::string em = write("qa.jsonl", "{\"prompt\": \"12+34=\", \"answer\": \"64\"}\n");
  const std::string out = dir_ / "run";
  const std::string train =
      "train --fresh --set train.steps=4 --set train.eval_every=2 --set train.log_every=2 --set model.n_layer=1 "
      "--set model.n_embd=32 --set model.n_head=4 --set train.micro_batch_size=8 --set train.threads=1 "
      "--set train.samples=0 --set optimizer.warmup_steps=1 --set metrics.tensorboard=false --set train.out_dir=" + out +
      " --set train.eval_task.0.kind=MULTIPLE_CHOICE --set train.eval_task.0.delimiter= --set train.eval_task.0.path=";
  const testing::RunResult r = run_loom(train + mc_ + " --set train.eval_task.1.kind=EXACT_MATCH --set train.eval_task.1.path=" +
                                        em + " --set train.eval_task.1.every=4");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("| mc acc "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| qa exact_match "), std::string::npos) << r.out;
  std::ifstream metrics(out + "/metrics.jsonl");
  std::string line;
  std::vector<int64_t> mc_steps, qa_steps;
  while (std::getline(metrics, line)) {
    const JsonValue record = json_parse(line);
    if (record.find("kind")->text != "eval") continue;
    const int64_t step = *record.find("step")->as_int64();
    if (record.find("mc/acc") != nullptr) {
      mc_steps.push_back(step);
      for (const char* key : {"mc/acc_stderr", "mc/acc_norm", "mc/acc_norm_stderr"}) {
        EXPECT_NE(record.find(key), nullptr) << key << " at step " << step;
      }
    }
    if (record.find("qa/exact_match") != nullptr) qa_steps.push_back(step);
  }
  EXPECT_EQ(mc_steps, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(qa_steps, (std::vector<int64_t>{4}));

  const std::string bad = write("bad.jsonl", "{\"context\": \"1\", \"choices\": [\"2\"], \"gold\": 0}\n"
                                             "{\"context\": \"1\", \"choices\": [\"2\"], \"gold\": 1}\n");
  const testing::RunResult stopped = run_loom(train + bad + " --set train.out_dir=" + (dir_ / "stopped"));
  EXPECT_EQ(stopped.exit_code, 2) << stopped.out;
  EXPECT_NE(stopped.err.find("bad.jsonl:2: the gold index 1 is out of range"), std::string::npos) << stopped.err;
  EXPECT_EQ(stopped.out.find(" 2/4 |"), std::string::npos) << "no step ran:\n" << stopped.out;
  EXPECT_FALSE(fs::exists(dir_ / "stopped")) << "the run stopped before it wrote anything";
}

}  // namespace
}  // namespace loom
