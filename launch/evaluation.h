// Evaluation: the trained model run on a task's held-out problems. It lives in launch/, above
// both the model (core/) and the datasets (data/), because a dataset does not run the model.
#pragma once

#include <cstdint>
#include <vector>

#include "core/gpt.h"
#include "data/addition.h"

namespace loom {

// Exact-match accuracy of greedy answers on `problems` (of any lengths), decoded with the KV
// cache. If `answers` is given it receives the model's answer for each problem (-1 when not a
// number).
double addition_accuracy(const GPT& model, const AdditionTask& task,
                         const std::vector<AdditionTask::Problem>& problems,
                         std::vector<int64_t>* answers = nullptr);

// The held-out scores, overall and per operand length.
struct AdditionScores {
  struct Length {
    int digits = 0;
    int problems = 0;
    double accuracy = 0;  // exact match of the greedy answer
    double loss = 0;      // mean cross-entropy (nats) of the answer's tokens, teacher-forced
  };
  double accuracy = 0;         // over all problems
  double loss = 0;             // over all answer tokens
  std::vector<Length> lengths;  // the lengths present, shortest first
};

// Accuracy as addition_accuracy, and the loss of the true answers given their prompts: the
// validation loss of the task (only answer tokens count, as in training).
AdditionScores addition_scores(const GPT& model, const AdditionTask& task,
                               const std::vector<AdditionTask::Problem>& problems,
                               std::vector<int64_t>* answers = nullptr);

}  // namespace loom
