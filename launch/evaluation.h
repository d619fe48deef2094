// Evaluation: the trained model run on a task's held-out problems. It lives in launch/, above
// both the model (core/) and the datasets (data/), because a dataset does not run the model.
#pragma once

#include <cstdint>
#include <vector>

#include "core/gpt.h"
#include "data/addition.h"

namespace loom {

// Exact-match accuracy of greedy answers on `problems`, decoded with the KV cache. If `answers`
// is given it receives the model's answer for each problem (-1 when not a number).
double addition_accuracy(const GPT& model, const AdditionTask& task,
                         const std::vector<AdditionTask::Problem>& problems,
                         std::vector<int64_t>* answers = nullptr);

}  // namespace loom
