// Multiple-choice scores against lm-evaluation-harness's definition written out with transformers
// (tests/reference/eval_harness_reference.py): a GPT-2 transformers made and saved, read by Loom
// as a Hugging Face model directory, with a hand-made GPT-2 tokenizer whose merges make the
// context/continuation split matter (" the" and "  " are single tokens). Documents with trailing
// spaces and a double space before the choice, an empty context, a choice with a multi-byte
// character, a context longer than the model's 24 positions. Each choice's score within 2e-4 of
// the harness's (a different split of the tokens would differ by far more), acc and acc_norm equal.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "data/gpt2_test_files.h"
#include "data/json.h"
#include "data/tokenizer.h"
#include "launch/eval_runner.h"
#include "launch/model_source.h"
#include "parallel/solo_communicator.h"

namespace loom {
namespace {

TEST(EvalReferenceTest, MultipleChoiceScoresAreTheHarnesss) {
  const std::string check = std::string(LOOM_PYTHON) + " -c 'import transformers' 2>/dev/null";
  if (std::system(check.c_str()) != 0) {
    FAIL() << "the Python package `transformers` is not installed for " << LOOM_PYTHON << ": run scripts/setup.sh";
  }
  testing::TempDir dir("eval_reference");
  const std::string tokenizer_dir = testing::write_tiny_gpt2(dir.path() / "tokenizer").string();
  const std::string docs_path = dir / "docs.jsonl";
  {
    std::ofstream docs(docs_path);
    docs << "{\"context\": \"Where is the cat? It is\", \"choices\": [\"the mat\", \"on the roof\", \"is\"], \"gold\": 1}\n"
         << "{\"context\": \"The answer is \", \"choices\": [\"12\", \"the 12\"], \"gold\": 0}\n"
         << "{\"context\": \"two spaces:  \", \"choices\": [\"the\", \"it's\"], \"gold\": 1}\n"
         << "{\"context\": \"\", \"choices\": [\"The start\", \"the end\"], \"gold\": 0}\n"
         << "{\"context\": \"caf\", \"choices\": [\"\xc3\xa9 is open\", \"e is shut\"], \"gold\": 0}\n"
         << "{\"context\": \"a context of more bytes than the model has positions, so its start goes\", "
            "\"choices\": [\"away\", \"on\"], \"gold\": 0}\n";
  }
  const std::string hf = dir / "model", reference = dir / "reference.jsonl";
  const std::string command = std::string(LOOM_PYTHON) + " " + LOOM_SOURCE_DIR +
                              "/tests/reference/eval_harness_reference.py " + tokenizer_dir + " " + hf + " " +
                              docs_path + " " + reference;
  ASSERT_EQ(std::system(command.c_str()), 0) << command;

  const LoadedModel loaded = load_trained_model(hf);
  GPT* chunk = loaded.model.get();
  parallel::SoloCommunicator one("dp");
  const std::shared_ptr<const Tokenizer> tokenizer = load_tokenizer(tokenizer_dir);
  const TextCodec codec = tokenizer_codec(tokenizer, tokenizer_dir);
  const std::vector<ChoiceDoc> docs = read_choice_docs(docs_path, 0);
  const ChoiceResult got = evaluate_multiple_choice(LayoutModel{{&chunk, 1}, &one, 4}, codec, docs, docs_path);

  std::ifstream in(reference);
  std::string line;
  double acc = 0, acc_norm = 0;
  for (size_t d = 0; d < docs.size(); ++d) {
    ASSERT_TRUE(std::getline(in, line)) << "the reference has no line for document " << d;
    const JsonValue want = json_parse(line);
    const std::vector<JsonValue>& scores = want.find("scores")->array;
    ASSERT_EQ(scores.size(), docs[d].choices.size());
    for (size_t c = 0; c < scores.size(); ++c) {
      const double w = std::strtod(scores[c].text.c_str(), nullptr);
      EXPECT_NEAR(got.log_likelihoods[d][c], w, 2e-4 * std::max(1.0, std::fabs(w))) << "document " << d << " choice " << c;
    }
    acc += std::strtod(want.find("acc")->text.c_str(), nullptr);
    acc_norm += std::strtod(want.find("acc_norm")->text.c_str(), nullptr);
  }
  EXPECT_DOUBLE_EQ(got.acc.mean, acc / static_cast<double>(docs.size()));
  EXPECT_DOUBLE_EQ(got.acc_norm.mean, acc_norm / static_cast<double>(docs.size()));
}

}  // namespace
}  // namespace loom
