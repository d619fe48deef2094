#include "launch/run_setup.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>

#include "launch/default_config.h"
#include "launch/token_run.h"

namespace loom {

config::RunConfig resolve_run_config(const std::string& path, const std::vector<std::string>& overrides) {
  config::RunConfig cfg = path.empty() ? parse_config_text(kDefaultConfigText, kDefaultConfigName)
                                       : load_config_file(path);
  for (const std::string& o : overrides) apply_config_override(cfg, o);
  validate_config(cfg);
  config::ModelConfig* m = cfg.mutable_model();
  if (cfg.data().has_tokens()) {
    const int vocab = static_cast<int>(token_vocab_size(cfg.data().tokens(), m->has_vocab_size() ? m->vocab_size() : 0));
    const int T = cfg.data().tokens().seq_len();
    if (!m->has_vocab_size()) m->set_vocab_size(vocab);
    if (!m->has_seq_len()) m->set_seq_len(T);
    if (m->vocab_size() < vocab) {
      fail_user("model.vocab_size is", m->vocab_size(), "but the token shards use", vocab,
                "tokens; set it to at least that or leave it unset");
    }
    if (m->seq_len() < T) {
      fail_user("model.seq_len is", m->seq_len(), "but data.tokens.seq_len is", T,
                "; raise it or leave it unset");
    }
    return cfg;
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
  return cfg;
}

AdditionTask make_task(const config::RunConfig& cfg) {
  return AdditionTask(cfg.data().addition().digits(), cfg.data().addition().test_problems(),
                      cfg.train().seed());
}

GPTConfig model_config_of(const config::RunConfig& cfg) {
  GPTConfig c;
  c.n_layer = cfg.model().n_layer();
  c.n_head = cfg.model().n_head();
  c.n_embd = cfg.model().n_embd();
  c.vocab_size = cfg.model().vocab_size();
  c.max_seq_len = cfg.model().seq_len();
  c.validate();
  return c;
}

int set_thread_count(int threads, const LaunchInfo& launch) {
  if (threads <= 0) threads = std::max(1, launch.cpu_share);
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
  return threads;
}

int set_thread_count(int threads) { return set_thread_count(threads, current_launch()); }

}  // namespace loom
