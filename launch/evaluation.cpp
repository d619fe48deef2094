#include "launch/evaluation.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "core/decoder.h"

namespace loom {

namespace {

// Problems of one length, decoded together: greedy answers, and the true answers' log-loss.
struct LengthRun {
  int correct = 0;
  double loss_sum = 0;  // nats over the answer tokens
  int64_t loss_tokens = 0;
};

// -log softmax(logits)[target], in double.
double token_loss(const float* logits, int V, int32_t target) {
  float max = logits[0];
  for (int v = 1; v < V; ++v) max = std::max(max, logits[v]);
  double sum = 0;
  for (int v = 0; v < V; ++v) sum += std::exp(static_cast<double>(logits[v]) - max);
  return std::log(sum) + max - logits[target];
}

LengthRun run_length(const GPT& model, const AdditionTask& task, const std::vector<size_t>& which,
                     const std::vector<AdditionTask::Problem>& problems, int d, bool with_loss,
                     std::vector<int64_t>* answers) {
  const int B = static_cast<int>(which.size());
  const int V = model.config().vocab_size;
  const int P = task.prompt_length(d), A = task.answer_length(d);
  std::vector<int32_t> prompts(static_cast<size_t>(B) * P), truth(static_cast<size_t>(B) * A);
  for (int i = 0; i < B; ++i) {
    const AdditionTask::Problem& p = problems[which[static_cast<size_t>(i)]];
    std::vector<int32_t> prompt = task.prompt_tokens(p);
    std::copy(prompt.begin(), prompt.end(), prompts.begin() + static_cast<int64_t>(i) * P);
    int64_t sum = p.a + p.b;
    for (int t = 0; t < A; ++t, sum /= 10) truth[static_cast<size_t>(i) * A + t] = static_cast<int32_t>(sum % 10);
  }
  std::vector<int32_t> column(static_cast<size_t>(B));
  auto feed_prompts = [&](Decoder& decoder) {
    const float* logits = nullptr;
    for (int t = 0; t < P; ++t) {
      for (int i = 0; i < B; ++i) column[static_cast<size_t>(i)] = prompts[static_cast<size_t>(i) * P + t];
      logits = decoder.step(column.data());
    }
    return logits;
  };
  LengthRun run;
  {
    Decoder decoder(model, B);
    const float* logits = feed_prompts(decoder);
    std::vector<int32_t> generated(static_cast<size_t>(B) * A);
    for (int t = 0; t < A; ++t) {
      for (int i = 0; i < B; ++i) {
        int32_t tok = sample_token(logits + static_cast<int64_t>(i) * V, V, 0.0f, 0, 0.0f);
        generated[static_cast<size_t>(i) * A + t] = tok;
        column[static_cast<size_t>(i)] = tok;
      }
      if (t + 1 < A) logits = decoder.step(column.data());
    }
    for (int i = 0; i < B; ++i) {
      const AdditionTask::Problem& p = problems[which[static_cast<size_t>(i)]];
      const int64_t got = task.answer_value(generated.data() + static_cast<int64_t>(i) * A, d);
      run.correct += got == p.a + p.b;
      if (answers) (*answers)[which[static_cast<size_t>(i)]] = got;
    }
  }
  if (with_loss) {
    // Teacher forcing: position P - 1 + t predicts answer token t given the true ones before it.
    Decoder decoder(model, B);
    const float* logits = feed_prompts(decoder);
    for (int t = 0; t < A; ++t) {
      for (int i = 0; i < B; ++i) {
        const int32_t target = truth[static_cast<size_t>(i) * A + t];
        run.loss_sum += token_loss(logits + static_cast<int64_t>(i) * V, V, target);
        column[static_cast<size_t>(i)] = target;
      }
      run.loss_tokens += B;
      if (t + 1 < A) logits = decoder.step(column.data());
    }
  }
  return run;
}

AdditionScores score(const GPT& model, const AdditionTask& task, const std::vector<AdditionTask::Problem>& problems,
                     bool with_loss, std::vector<int64_t>* answers) {
  AdditionScores scores;
  if (answers) answers->assign(problems.size(), -1);
  if (problems.empty()) return scores;
  std::map<int, std::vector<size_t>> by_length;
  for (size_t i = 0; i < problems.size(); ++i) by_length[task.digits_of(problems[i])].push_back(i);
  int correct = 0;
  double loss_sum = 0;
  int64_t loss_tokens = 0;
  for (const auto& [d, which] : by_length) {
    const LengthRun run = run_length(model, task, which, problems, d, with_loss, answers);
    const int n = static_cast<int>(which.size());
    scores.lengths.push_back({d, n, static_cast<double>(run.correct) / n,
                              run.loss_tokens > 0 ? run.loss_sum / static_cast<double>(run.loss_tokens) : 0.0});
    correct += run.correct;
    loss_sum += run.loss_sum;
    loss_tokens += run.loss_tokens;
  }
  scores.accuracy = static_cast<double>(correct) / static_cast<double>(problems.size());
  scores.loss = loss_tokens > 0 ? loss_sum / static_cast<double>(loss_tokens) : 0.0;
  return scores;
}

}  // namespace

double addition_accuracy(const GPT& model, const AdditionTask& task,
                         const std::vector<AdditionTask::Problem>& problems,
                         std::vector<int64_t>* answers) {
  return score(model, task, problems, false, answers).accuracy;
}

AdditionScores addition_scores(const GPT& model, const AdditionTask& task,
                               const std::vector<AdditionTask::Problem>& problems,
                               std::vector<int64_t>* answers) {
  return score(model, task, problems, true, answers);
}

}  // namespace loom
