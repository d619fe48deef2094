#include "launch/evaluation.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "core/decoder.h"
#include "test_util.h"

namespace loom {
namespace {

// A model over the addition vocabulary, long enough for its problems with `digits` digits.
GPTConfig addition_model(const AdditionTask& task) {
  return GPTConfig{2, 2, 16, AdditionTask::kVocabSize, task.sequence_length()};
}

Parameter& parameter_named(GPT& model, const std::string& name) {
  for (Parameter& p : model.parameters()) {
    if (p.name == name) return p;
  }
  throw Error("no parameter " + name);
}

// Makes `model` answer `token` at every position: the final LayerNorm outputs its bias alone,
// which is 1 on the first channel, and only `token`'s (tied) embedding has a first channel.
void always_predict(GPT& model, int32_t token) {
  const int C = model.config().n_embd, V = model.config().vocab_size;
  std::fill_n(parameter_named(model, "ln_f.weight").value.f32(), C, 0.0f);
  float* bias = parameter_named(model, "ln_f.bias").value.f32();
  std::fill_n(bias, C, 0.0f);
  bias[0] = 1.0f;
  float* wte = parameter_named(model, "wte").value.f32();  // (V, C)
  for (int v = 0; v < V; ++v) wte[static_cast<int64_t>(v) * C] = v == token ? 1.0f : 0.0f;
}

TEST(EvaluationTest, AccuracyIsTheShareOfExactlyRightAnswers) {
  const AdditionTask task(2, 10, 1);
  GPT model(addition_model(task));
  model.init_weights(3);
  always_predict(model, 0);  // every answer reads "000": right only for 0 + 0
  const std::vector<AdditionTask::Problem> problems = {{0, 0}, {3, 4}, {0, 0}, {50, 50}};
  std::vector<int64_t> answers;
  EXPECT_DOUBLE_EQ(addition_accuracy(model, task, problems, &answers), 0.5);
  EXPECT_EQ(answers, (std::vector<int64_t>{0, 0, 0, 0}));

  always_predict(model, 10);  // '+': not a number
  EXPECT_DOUBLE_EQ(addition_accuracy(model, task, problems, &answers), 0.0);
  EXPECT_EQ(answers, (std::vector<int64_t>(4, -1)));
  EXPECT_DOUBLE_EQ(addition_accuracy(model, task, {}), 0.0);
}

// Batched greedy answers are those of the full forward, one problem and one token at a time.
TEST(EvaluationTest, AnswersAreTheGreedyContinuationOfEachPrompt) {
  const AdditionTask task(2, 20, 4);
  GPT model(addition_model(task));
  model.init_weights(7);
  const std::vector<AdditionTask::Problem>& problems = task.test_problems();
  std::vector<int64_t> answers;
  const double accuracy = addition_accuracy(model, task, problems, &answers);
  ASSERT_EQ(answers.size(), problems.size());
  const int V = AdditionTask::kVocabSize;
  int right = 0;
  for (size_t i = 0; i < problems.size(); ++i) {
    std::vector<int32_t> sequence = task.prompt_tokens(problems[i]);
    std::vector<int32_t> answer;
    for (int k = 0; k < task.answer_length(); ++k) {
      const int T = static_cast<int>(sequence.size());
      model.forward(sequence.data(), nullptr, 1, T);
      const int32_t next = sample_token(model.logits() + static_cast<int64_t>(T - 1) * V, V, 0.0f, 0, 0.0f);
      answer.push_back(next);
      sequence.push_back(next);
    }
    EXPECT_EQ(answers[i], task.answer_value(answer.data()))
        << "problem " << i << ": " << problems[i].a << " + " << problems[i].b;
    right += answers[i] == problems[i].a + problems[i].b;
  }
  EXPECT_DOUBLE_EQ(accuracy, static_cast<double>(right) / static_cast<double>(problems.size()));
}

// The held-out loss is the training loss of the same sequences (answer tokens only), and each
// length's accuracy is addition_accuracy on that length's problems.
TEST(EvaluationTest, ScoresAreTheLossOfTheTrueAnswersAndTheAccuracyPerLength) {
  const AdditionTask task(1, 2, 6, 3);
  GPT model(addition_model(task));
  model.init_weights(5);
  const std::vector<AdditionTask::Problem>& problems = task.test_problems();
  ASSERT_EQ(problems.size(), 12u);
  std::vector<int64_t> answers;
  const AdditionScores scores = addition_scores(model, task, problems, &answers);
  ASSERT_EQ(scores.lengths.size(), 2u);
  EXPECT_DOUBLE_EQ(scores.accuracy, addition_accuracy(model, task, problems));
  double weighted_loss = 0, tokens = 0;
  for (const AdditionScores::Length& l : scores.lengths) {
    std::vector<AdditionTask::Problem> mine;
    for (const AdditionTask::Problem& p : problems) {
      if (p.digits == l.digits) mine.push_back(p);
    }
    EXPECT_EQ(l.problems, static_cast<int>(mine.size()));
    EXPECT_DOUBLE_EQ(l.accuracy, addition_accuracy(model, task, mine)) << l.digits << " digits";
    // The full forward's mean loss over these problems' sequences, padded as in training.
    const int T = task.sequence_length(), B = static_cast<int>(mine.size());
    std::vector<int32_t> tok(static_cast<size_t>(B) * T), tgt(static_cast<size_t>(B) * T);
    for (int i = 0; i < B; ++i) task.write_problem(mine[static_cast<size_t>(i)], tok.data() + i * T, tgt.data() + i * T);
    const float loss = model.forward(tok.data(), tgt.data(), B, T);
    EXPECT_NEAR(l.loss, loss, 1e-5 * std::max(1.0, std::fabs(l.loss))) << l.digits << " digits";
    weighted_loss += l.loss * B * (l.digits + 1);
    tokens += B * (l.digits + 1);
  }
  EXPECT_NEAR(scores.loss, weighted_loss / tokens, 1e-12);
}

}  // namespace
}  // namespace loom
