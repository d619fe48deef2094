#include "launch/evaluation.h"

#include <algorithm>

#include "core/decoder.h"

namespace loom {

double addition_accuracy(const GPT& model, const AdditionTask& task,
                         const std::vector<AdditionTask::Problem>& problems,
                         std::vector<int64_t>* answers) {
  const int B = static_cast<int>(problems.size());
  if (B == 0) return 0.0;
  const int V = model.config().vocab_size;
  Decoder decoder(model, B);
  const int P = task.prompt_length(), A = task.answer_length();
  std::vector<int32_t> prompts(static_cast<size_t>(B) * P);
  for (int i = 0; i < B; ++i) {
    std::vector<int32_t> p = task.prompt_tokens(problems[static_cast<size_t>(i)]);
    std::copy(p.begin(), p.end(), prompts.begin() + static_cast<int64_t>(i) * P);
  }
  std::vector<int32_t> column(static_cast<size_t>(B));
  std::vector<int32_t> generated(static_cast<size_t>(B) * A);
  const float* logits = nullptr;
  for (int t = 0; t < P; ++t) {
    for (int i = 0; i < B; ++i) column[static_cast<size_t>(i)] = prompts[static_cast<size_t>(i) * P + t];
    logits = decoder.step(column.data());
  }
  for (int t = 0; t < A; ++t) {
    for (int i = 0; i < B; ++i) {
      int32_t tok = sample_token(logits + static_cast<int64_t>(i) * V, V, 0.0f, 0, 0.0f);
      generated[static_cast<size_t>(i) * A + t] = tok;
      column[static_cast<size_t>(i)] = tok;
    }
    if (t + 1 < A) logits = decoder.step(column.data());
  }
  int correct = 0;
  if (answers) answers->assign(static_cast<size_t>(B), -1);
  for (int i = 0; i < B; ++i) {
    int64_t got = task.answer_value(generated.data() + static_cast<int64_t>(i) * A);
    const AdditionTask::Problem& p = problems[static_cast<size_t>(i)];
    correct += got == p.a + p.b;
    if (answers) (*answers)[static_cast<size_t>(i)] = got;
  }
  return static_cast<double>(correct) / B;
}

}  // namespace loom
