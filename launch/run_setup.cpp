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
  const config::ModelConfig& m = cfg.model();
  const int token_vocab =
      cfg.data().has_tokens()
          ? static_cast<int>(token_vocab_size(cfg.data().tokens(), m.has_vocab_size() ? m.vocab_size() : 0))
          : 0;
  fit_model_to_data(cfg, token_vocab);
  return cfg;
}

int set_thread_count(int threads, const LaunchInfo& launch) {
  if (threads <= 0) threads = std::max(1, launch.cpu_share);
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
  return threads;
}

int set_thread_count(int threads) { return set_thread_count(threads, current_launch()); }

}  // namespace loom
