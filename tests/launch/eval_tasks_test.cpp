// The task files of `loom eval` (launch/eval_tasks.h): documents with their field aliases, the
// limit, every bad line as one `FILE:LINE: ...` sentence; and the metrics: argmax ties, length
// in characters, the standard error, acc and acc_norm choosing differently.
#include "launch/eval_tasks.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "launch/eval_runner.h"
#include "test_util.h"

namespace loom {
namespace {

using testing::TempDir;
using testing::user_error_of;

std::string write(const TempDir& dir, const std::string& name, const std::string& text) {
  const std::string path = dir / name;
  std::ofstream(path) << text;
  return path;
}

TEST(EvalTasksTest, ReadsChoiceDocsWithTheirAliasesAndLimit) {
  TempDir dir("eval_tasks");
  const std::string path = write(dir, "mc.jsonl",
                                 "{\"context\": \"The sky is\", \"choices\": [\"blue\", \"green\"], \"gold\": 0}\n"
                                 "\n"
                                 "{\"query\": \"A cat\", \"endings\": [\"sat\", \"flew\", \"ran\"], \"label\": \"2\"}\r\n"
                                 "{\"ctx\": \"x\", \"choices\": [\"y\"], \"label\": 0}\n");
  const std::vector<ChoiceDoc> docs = read_choice_docs(path, 0);
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[0].context, "The sky is");
  EXPECT_EQ(docs[0].choices, (std::vector<std::string>{"blue", "green"}));
  EXPECT_EQ(docs[0].gold, 0);
  EXPECT_EQ(docs[0].line, 1);
  EXPECT_EQ(docs[1].context, "A cat");
  EXPECT_EQ(docs[1].choices.size(), 3u);
  EXPECT_EQ(docs[1].gold, 2);
  EXPECT_EQ(docs[1].line, 3);  // the blank line is skipped, and counted
  EXPECT_EQ(docs[2].context, "x");
  EXPECT_EQ(read_choice_docs(path, 2).size(), 2u);
  EXPECT_EQ(read_choice_docs(path, 10).size(), 3u);
}

TEST(EvalTasksTest, EveryBadChoiceLineNamesItsFileAndLine) {
  TempDir dir("eval_tasks");
  const std::string good = "{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"gold\": 1}\n";
  struct Case {
    std::string line, expected;
  };
  const std::vector<Case> cases = {
      {"{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"gold\": 2}", "the gold index 2 is out of range: the document has 2 choices (indices 0 .. 1)"},
      {"{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"gold\": -1}", "the gold index -1 is out of range"},
      {"{\"context\": \"a\", \"choices\": [], \"gold\": 0}", "\"choices\" is empty"},
      {"{\"context\": \"a\", \"choices\": [\"b\", \"\"], \"gold\": 0}", "choice 1 is empty"},
      {"{\"choices\": [\"b\"], \"gold\": 0}", "no field \"context\" or \"query\" or \"ctx\" (a string); the object has \"choices\", \"gold\""},
      {"{\"context\": \"a\", \"gold\": 0}", "no field \"choices\" or \"endings\""},
      {"{\"context\": \"a\", \"choices\": [\"b\"]}", "no field \"gold\" or \"label\""},
      {"{\"context\": \"a\", \"choices\": [\"b\"], \"gold\": 0.5}", "the gold index 0.5 is not an integer"},
      {"{\"context\": \"a\", \"choices\": [\"b\"], \"gold\": \"first\"}", "the gold index is a string 'first'"},
      {"{\"context\": 3, \"choices\": [\"b\"], \"gold\": 0}", "\"context\" is a number but must be a string"},
      {"{\"context\": \"a\", \"choices\": \"b\", \"gold\": 0}", "\"choices\" is a string but must be a list of strings"},
      {"{\"context\": \"a\", \"choices\": [\"b\", 7], \"gold\": 0}", "choice 1 is a number but must be a string"},
      {"{\"context\": \"a\", \"choices\": [\"b\"], \"gold\": 0", "invalid JSON at byte offset"},
      {"[1, 2]", "the line is an array but must be a JSON object"},
  };
  for (const Case& c : cases) {
    const std::string path = write(dir, "bad.jsonl", good + c.line + "\n" + good);
    const std::string error = user_error_of([&] { read_choice_docs(path, 0); });
    EXPECT_EQ(error.rfind(path + ":2: ", 0), 0u) << error;
    EXPECT_NE(error.find(c.expected), std::string::npos) << "got: " << error << "\nwant: " << c.expected;
    // The limit does not skip the check of the lines after it.
    EXPECT_NE(user_error_of([&] { read_choice_docs(path, 1); }).find(path + ":2:"), std::string::npos);
  }
  EXPECT_NE(user_error_of([&] { read_choice_docs(dir / "absent.jsonl", 0); }).find("cannot read the task file"),
            std::string::npos);
  EXPECT_NE(user_error_of([&] { read_choice_docs(write(dir, "empty.jsonl", "\n\n"), 0); }).find("holds no document"),
            std::string::npos);
}

TEST(EvalTasksTest, ReadsAnswerDocsAndRefusesBadOnes) {
  TempDir dir("eval_tasks");
  const std::string path = write(dir, "em.jsonl", "{\"prompt\": \"2+2=\", \"answer\": \" 4 \"}\n");
  const std::vector<AnswerDoc> docs = read_answer_docs(path, 0);
  ASSERT_EQ(docs.size(), 1u);
  EXPECT_EQ(docs[0].prompt, "2+2=");
  EXPECT_EQ(docs[0].answer, " 4 ");
  const std::string missing = write(dir, "missing.jsonl", "{\"prompt\": \"2+2=\"}\n");
  EXPECT_EQ(user_error_of([&] { read_answer_docs(missing, 0); }),
            missing + ":1: no field \"answer\" (a string); the object has \"prompt\"");
  const std::string blank = write(dir, "blank.jsonl", "{\"prompt\": \"2+2=\", \"answer\": \"  \"}\n");
  EXPECT_NE(user_error_of([&] { read_answer_docs(blank, 0); }).find(blank + ":1: \"answer\" is empty"), std::string::npos);
  const std::string empty_prompt = write(dir, "prompt.jsonl", "{\"prompt\": \"\", \"answer\": \"4\"}\n");
  EXPECT_NE(user_error_of([&] { read_answer_docs(empty_prompt, 0); }).find(":1: \"prompt\" is empty"),
            std::string::npos);
}

TEST(EvalTasksTest, MetricsFollowTheHarness) {
  EXPECT_EQ(best_choice({-3.0, -1.0, -1.0, -2.0}), 1);  // the first of equal maxima
  EXPECT_EQ(utf8_characters("h\xc3\xa9llo \xe2\x82\xac"), 7);  // "héllo €": code points, not bytes
  EXPECT_EQ(trim_whitespace(" \t 42 \r\n"), "42");
  EXPECT_EQ(trim_whitespace("  "), "");
  const MeanScore s = mean_score({1, 0, 1, 1});
  EXPECT_DOUBLE_EQ(s.mean, 0.75);
  // Sample variance 0.25 (n - 1 = 3 in the denominator), over sqrt(4).
  EXPECT_DOUBLE_EQ(s.stderr_of_mean, std::sqrt(0.25) / 2.0);
  EXPECT_EQ(s.n, 4);
  EXPECT_EQ(mean_score({1}).stderr_of_mean, 0.0);
}

TEST(EvalTasksTest, AccAndAccNormChooseDifferently) {
  // Choice 0 is more likely in total, choice 1 per character: acc picks 0, acc_norm picks 1.
  std::vector<ChoiceDoc> docs(2);
  docs[0].choices = {"a", "bbbbbbbb"};
  docs[0].gold = 1;
  docs[1].choices = {"a", "bbbbbbbb"};
  docs[1].gold = 0;
  ChoiceResult result;
  result.log_likelihoods = {{-2.0, -4.0}, {-2.0, -4.0}};
  score_choices(docs, result);
  EXPECT_DOUBLE_EQ(result.acc.mean, 0.5);       // doc 1 right
  EXPECT_DOUBLE_EQ(result.acc_norm.mean, 0.5);  // doc 0 right
  result.log_likelihoods = {{-2.0, -4.0}, {-2.0, -40.0}};  // -40 / 8 = -5 < -2: both pick 0 on doc 1
  score_choices(docs, result);
  EXPECT_DOUBLE_EQ(result.acc.mean, 0.5);
  EXPECT_DOUBLE_EQ(result.acc_norm.mean, 1.0);
}

}  // namespace
}  // namespace loom
