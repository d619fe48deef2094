// The evaluations of launch/eval_runner.h on a small model of the addition task's alphabet:
//   multiple choice   each choice's log-likelihood equals -evaluate_loss x its token count on the
//                     sequence context + choice with only the choice's tokens counted, whatever
//                     the forward passes' batching; acc and acc_norm follow from them
//   exact match       right exactly where the answer is the model's greedy continuation, and the
//                     addition task's held-out problems written as a file score as --addition does
//   bad documents     a context the alphabet cannot encode, a choice longer than the model
//   loss              a prepared dataset's split: the mean of evaluate_loss over its windows,
//                     weighted by their targets
#include "launch/eval_runner.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/decoder.h"
#include "core/train_step.h"
#include "data/prepare.h"
#include "data/token_dataset.h"
#include "launch/run_setup.h"
#include "launch/run_shape.h"
#include "parallel/solo_communicator.h"
#include "test_util.h"

namespace loom {
namespace {

using testing::user_error_of;

class EvalRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cfg_ = resolve_run_config("", {"model.n_layer=2", "model.n_head=4", "model.n_embd=32"});
    model_ = std::make_unique<GPT>(model_config_of(cfg_));
    model_->init_weights(5);
    task_.emplace(make_task(cfg_));
    codec_ = addition_codec(*task_);
    chunk_ = model_.get();
  }

  LayoutModel layout(int batch_rows) { return LayoutModel{std::span<GPT* const>(&chunk_, 1), &dp_, batch_rows}; }

  // -evaluate_loss x count on context + choice, the choice's tokens counted.
  double direct_log_likelihood(const std::string& context, const std::string& choice) {
    const std::vector<int32_t> c = task_->encode(context), x = task_->encode(choice);
    std::vector<int32_t> sequence = c;
    sequence.insert(sequence.end(), x.begin(), x.end());
    const int T = static_cast<int>(sequence.size()) - 1;
    std::vector<int32_t> tokens(sequence.begin(), sequence.end() - 1), targets(static_cast<size_t>(T), -1);
    for (int t = static_cast<int>(c.size()) - 1; t < T; ++t) targets[static_cast<size_t>(t)] = sequence[static_cast<size_t>(t) + 1];
    const MicroBatch mb{tokens.data(), targets.data(), 1, T};
    return -evaluate_loss(std::span<GPT* const>(&chunk_, 1), dp_, std::span<const MicroBatch>(&mb, 1)) *
           static_cast<double>(x.size());
  }

  config::RunConfig cfg_;
  std::unique_ptr<GPT> model_;
  std::optional<AdditionTask> task_;
  TextCodec codec_;
  GPT* chunk_ = nullptr;
  parallel::SoloCommunicator dp_{"dp"};
};

TEST_F(EvalRunnerTest, ChoiceLogLikelihoodsEqualEvaluateLossTimesCount) {
  std::vector<ChoiceDoc> docs(3);
  docs[0] = {"12+34=", {"64", "2", "640"}, 0, 1};
  docs[1] = {"9", {"+9=81", "=", "99"}, 2, 2};
  docs[2] = {"123+456=9", {"750", "7"}, 1, 3};
  const ChoiceResult wide = evaluate_multiple_choice(layout(16), codec_, docs, "docs.jsonl", "");
  const ChoiceResult narrow = evaluate_multiple_choice(layout(2), codec_, docs, "docs.jsonl", "");
  std::vector<double> acc, acc_norm;
  for (size_t d = 0; d < docs.size(); ++d) {
    ASSERT_EQ(wide.log_likelihoods[d].size(), docs[d].choices.size());
    std::vector<double> per_character;
    for (size_t c = 0; c < docs[d].choices.size(); ++c) {
      const double want = direct_log_likelihood(docs[d].context, docs[d].choices[c]);
      EXPECT_NEAR(wide.log_likelihoods[d][c], want, 1e-5 * std::fabs(want)) << "doc " << d << " choice " << c;
      EXPECT_NEAR(narrow.log_likelihoods[d][c], want, 1e-5 * std::fabs(want)) << "doc " << d << " choice " << c;
      per_character.push_back(want / static_cast<double>(docs[d].choices[c].size()));
    }
    acc.push_back(best_choice(wide.log_likelihoods[d]) == docs[d].gold);
    acc_norm.push_back(best_choice(per_character) == docs[d].gold);
  }
  EXPECT_DOUBLE_EQ(wide.acc.mean, mean_score(acc).mean);
  EXPECT_DOUBLE_EQ(wide.acc_norm.mean, mean_score(acc_norm).mean);
  EXPECT_DOUBLE_EQ(wide.acc.stderr_of_mean, mean_score(acc).stderr_of_mean);
}

TEST_F(EvalRunnerTest, ALongContextLosesItsOldestTokens) {
  // 11 context tokens + 2 choice tokens > the model's 11 positions + 1: the first token goes.
  std::vector<ChoiceDoc> docs(1);
  docs[0] = {"12345678901", {"12"}, 0, 1};
  const ChoiceResult r = evaluate_multiple_choice(layout(4), codec_, docs, "docs.jsonl", "");
  const double want = direct_log_likelihood("2345678901", "12");
  EXPECT_NEAR(r.log_likelihoods[0][0], want, 1e-5 * std::fabs(want));
}

TEST_F(EvalRunnerTest, DocumentsTheModelCannotTakeAreOneSentence) {
  std::vector<ChoiceDoc> docs(1);
  docs[0] = {"12 + 3", {"4"}, 0, 7};
  EXPECT_NE(user_error_of([&] { evaluate_multiple_choice(layout(4), codec_, docs, "f.jsonl", ""); })
                .find("f.jsonl:7: cannot encode the text with the addition task's alphabet"),
            std::string::npos);
  docs[0] = {"1", {"123456789012"}, 0, 3};
  EXPECT_NE(user_error_of([&] { evaluate_multiple_choice(layout(4), codec_, docs, "f.jsonl", ""); })
                .find("f.jsonl:3: choice 0 has 12 tokens but the model sees at most 11 positions"),
            std::string::npos);
  docs[0] = {"", {"1"}, 0, 4};
  EXPECT_NE(user_error_of([&] { evaluate_multiple_choice(layout(4), codec_, docs, "f.jsonl", ""); })
                .find("f.jsonl:4: the context is empty and the addition task's alphabet"),
            std::string::npos);
  // A tokenizer whose ids the model does not have.
  TextCodec wide_codec = codec_;
  wide_codec.encode = [](const std::string&) { return std::vector<int32_t>{3, 40}; };
  wide_codec.name = "the tokenizer wide";
  docs[0] = {"1", {"2"}, 0, 5};
  EXPECT_NE(user_error_of([&] { evaluate_multiple_choice(layout(4), wide_codec, docs, "f.jsonl", ""); })
                .find("f.jsonl:5: the tokenizer wide gives token id 40 but the model has 12 tokens"),
            std::string::npos);
}

TEST_F(EvalRunnerTest, ExactMatchComparesTheGreedyAnswer) {
  const std::vector<int32_t> prompt = task_->encode("12+34=");
  const std::vector<int32_t> greedy = generate_tokens(*model_, prompt, 3, 1, SamplingSettings{})[0];
  const std::string answer = task_->decode(greedy.data(), 3);
  std::string wrong = answer;
  wrong[0] = wrong[0] == '1' ? '2' : '1';
  std::vector<AnswerDoc> docs = {{"12+34=", answer, 1}, {"12+34=", wrong, 2}, {"12+34=", answer.substr(0, 2), 3}};
  const MeanScore s = evaluate_exact_match(*model_, dp_, codec_, docs, "em.jsonl");
  EXPECT_EQ(s.n, 3);
  // The first is the greedy answer; the second differs; the third is its first two tokens, as
  // many as are generated for it.
  EXPECT_DOUBLE_EQ(s.mean, 2.0 / 3.0);
}

TEST_F(EvalRunnerTest, AdditionProblemsAsAFileScoreAsTheAdditionTask) {
  const int n = 40;
  std::vector<AnswerDoc> docs;
  for (int i = 0; i < n; ++i) {
    const AdditionTask::Problem& p = task_->test_problems()[static_cast<size_t>(i)];
    std::string sum = std::to_string(p.a + p.b);
    sum.insert(0, static_cast<size_t>(task_->answer_length()) - sum.size(), '0');
    const std::vector<int32_t> prompt = task_->prompt_tokens(p);
    docs.push_back({task_->decode(prompt.data(), static_cast<int>(prompt.size())), std::string(sum.rbegin(), sum.rend()), i + 1});
  }
  const MeanScore file = evaluate_exact_match(*model_, dp_, codec_, docs, "addition.jsonl");
  const MeanScore builtin = evaluate_addition(*model_, dp_, *task_, n);
  EXPECT_EQ(file.n, n);
  EXPECT_EQ(builtin.n, n);
  EXPECT_DOUBLE_EQ(file.mean, builtin.mean);
}

TEST(EvalLossTaskTest, TheSplitsLossIsEveryWindowsLoss) {
  testing::TempDir dir("eval_loss");
  {
    std::ofstream text(dir / "corpus.txt");
    for (int i = 0; i < 200; ++i) text << "the cat " << i << " sat on the mat and looked at dog " << i % 7 << "\n\n";
  }
  PrepareOptions options;
  options.inputs = {dir / "corpus.txt"};
  options.out_dir = dir / "data";
  options.vocab_size = 300;
  options.corpus.documents = DocumentBoundary::kBlankLine;
  options.val_fraction = 0.2;
  options.threads = 1;
  prepare_dataset(options);
  const TokenDataset val = TokenDataset::open_split(dir / "data", "val");
  GPTConfig config{2, 2, 16, 300, 8};
  GPT model(config);
  model.init_weights(3);
  GPT* chunk = &model;
  parallel::SoloCommunicator one("dp");
  const LossResult got = evaluate_loss_task(LayoutModel{{&chunk, 1}, &one, 3}, dir / "data", "val", 0);
  double sum = 0;
  int64_t tokens = 0, windows = 0;
  for (uint64_t begin = 0; begin + 1 < val.tokens(); begin += 8, ++windows) {
    const uint64_t n = std::min<uint64_t>(9, val.tokens() - begin);
    std::vector<int32_t> w(n);
    val.read(begin, n, w.data());
    const MicroBatch mb{w.data(), w.data() + 1, 1, static_cast<int>(n) - 1};
    sum += evaluate_loss({&chunk, 1}, one, {&mb, 1}) * static_cast<double>(n - 1);
    tokens += static_cast<int64_t>(n) - 1;
  }
  EXPECT_EQ(got.tokens, tokens);
  EXPECT_EQ(got.sequences, windows);
  EXPECT_NEAR(got.loss, sum / static_cast<double>(tokens), 1e-5 * got.loss);
  EXPECT_NEAR(got.perplexity, std::exp(got.loss), 1e-9 * got.perplexity);
  const LossResult limited = evaluate_loss_task(LayoutModel{{&chunk, 1}, &one, 3}, dir / "data", "val", 2);
  EXPECT_EQ(limited.sequences, 2);
  EXPECT_EQ(limited.tokens, 16);
  const std::string wrong_vocab = user_error_of([&] {
    GPT small(GPTConfig{2, 2, 16, 20, 8});
    GPT* c = &small;
    evaluate_loss_task(LayoutModel{{&c, 1}, &one, 3}, dir / "data", "val", 0);
  });
  EXPECT_NE(wrong_vocab.find("has a vocabulary of 300 tokens but the model only 20"), std::string::npos) << wrong_vocab;
}

}  // namespace
}  // namespace loom
