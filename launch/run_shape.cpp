#include "launch/run_shape.h"

#include "core/base/check.h"

namespace loom {

void fit_model_to_data(config::RunConfig& cfg, int token_vocab) {
  config::ModelConfig* m = cfg.mutable_model();
  if (cfg.data().has_tokens()) {
    const int T = cfg.data().tokens().seq_len();
    if (!m->has_vocab_size()) m->set_vocab_size(token_vocab);
    if (!m->has_seq_len()) m->set_seq_len(T);
    if (m->vocab_size() < token_vocab) {
      fail_user("model.vocab_size is", m->vocab_size(), "but the token shards use", token_vocab,
                "tokens; set it to at least that or leave it unset");
    }
    if (m->seq_len() < T) {
      fail_user("model.seq_len is", m->seq_len(), "but data.tokens.seq_len is", T,
                "; raise it or leave it unset");
    }
    return;
  }
  AdditionTask task = make_task(cfg);
  if (!m->has_vocab_size()) m->set_vocab_size(AdditionTask::kVocabSize);
  if (!m->has_seq_len()) m->set_seq_len(task.sequence_length());
  if (m->vocab_size() < AdditionTask::kVocabSize) {
    fail_user("model.vocab_size is", m->vocab_size(), "but the addition dataset uses",
              AdditionTask::kVocabSize, "tokens; set it to at least that or leave it unset");
  }
  if (m->seq_len() < task.sequence_length()) {
    fail_user("model.seq_len is", m->seq_len(), "but", task.digits(), "-digit addition problems need",
              task.sequence_length(), "positions; raise it or leave it unset");
  }
}

AdditionTask make_task(const config::RunConfig& cfg) {
  const config::AdditionData& a = cfg.data().addition();
  return AdditionTask(a.has_min_digits() ? a.min_digits() : a.digits(), a.digits(), a.test_problems(),
                      cfg.train().seed());
}

Precision cpu_precision_of(const config::RunConfig& cfg) {
  return cfg.train().precision() == config::TrainConfig::PRECISION_BF16 ? Precision::kBF16 : Precision::kF32;
}

GPTConfig model_config_of(const config::RunConfig& cfg) { return gpt_config_of(cfg.model()); }

}  // namespace loom
