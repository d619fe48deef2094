// `loom train`: the single-process training loop on CPU.
//
// Reads the config, builds the dataset and the model, trains with AdamW (warmup + cosine,
// gradient accumulation, global-norm clipping), prints a progress line every log_every steps and
// the held-out exact-match accuracy every eval_every steps, writes the model file, and ends with
// samples: held-out problems, the model's answers and whether they are right.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "checkpoints/model_file.h"
#include "core/optimizer.h"
#include "launch/cli.h"
#include "launch/commands.h"
#include "launch/run_setup.h"

namespace loom {

namespace {

const std::vector<FlagSpec>& train_flags() {
  static const std::vector<FlagSpec> flags = {
      {"set", "FIELD=VALUE", "override a config field, e.g. --set train.steps=500", true},
      {"help", "", "show this help"},
  };
  return flags;
}

std::string format_count(double value) {
  char buf[32];
  if (value >= 1e6) std::snprintf(buf, sizeof buf, "%.2fM", value / 1e6);
  else if (value >= 1e3) std::snprintf(buf, sizeof buf, "%.1fk", value / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", value);
  return buf;
}

}  // namespace

int run_train(const std::vector<std::string>& args) {
  ParsedArgs parsed = parse_args("train", args, train_flags());
  if (parsed.has("help")) {
    std::cout << usage_text(
        "loom train [CONFIG.pbtxt] [--set field=value ...]",
        "Trains a GPT on CPU. Without CONFIG, trains the built-in demo (configs/addition.pbtxt):\n"
        "a small GPT learning 3-digit addition. Config fields: docs/config.md.",
        train_flags());
    return 0;
  }
  if (parsed.positionals.size() > 1) fail_user("loom train takes one config file, got", parsed.positionals.size());
  const std::string config_path = parsed.positionals.empty() ? "" : parsed.positionals[0];
  const auto overrides = parsed.flags.count("set") ? parsed.flags.at("set") : std::vector<std::string>{};
  config::RunConfig cfg = resolve_run_config(config_path, overrides);

  const config::TrainConfig& tc = cfg.train();
  const config::OptimizerConfig& oc = cfg.optimizer();
  const int threads = set_thread_count(tc.threads());
  AdditionTask task = make_task(cfg);
  GPT model(model_config_of(cfg));
  model.init_weights(tc.seed());
  AdamWSettings settings{oc.beta1(), oc.beta2(), oc.eps(), oc.weight_decay(), oc.grad_clip()};
  AdamW optimizer(model.parameters(), settings);

  const int B = tc.micro_batch_size(), T = task.sequence_length(), accum = tc.grad_accum_steps();
  const int steps = tc.steps();
  const GPTConfig& mc = model.config();
  std::printf("loom train: GPT %d layers, %d heads, width %d, vocab %d, seq %d: %s parameters\n",
              mc.n_layer, mc.n_head, mc.n_embd, mc.vocab_size, mc.max_seq_len,
              format_count(static_cast<double>(model.num_parameters())).c_str());
  std::printf("data: %d-digit addition, %d held-out problems; batch %d x %d accumulation, %d steps, "
              "%d threads\n",
              task.digits(), static_cast<int>(task.test_problems().size()),
              B, accum, steps, threads);
  std::fflush(stdout);

  std::vector<int32_t> tokens(static_cast<size_t>(B) * T), targets(tokens.size());
  using Clock = std::chrono::steady_clock;
  auto window_start = Clock::now();
  double window_loss = 0;
  int window_steps = 0;
  for (int step = 0; step < steps; ++step) {
    const float lr = lr_at_step(step, steps, oc.lr(), oc.warmup_steps(), oc.min_lr_ratio());
    model.zero_grad();
    double step_loss = 0;
    for (int micro = 0; micro < accum; ++micro) {
      task.train_batch(static_cast<uint64_t>(step) * accum + micro, B, tokens.data(), targets.data());
      step_loss += model.forward(tokens.data(), targets.data(), B, T);
      model.backward(1.0f / static_cast<float>(accum));
    }
    step_loss /= accum;
    const float grad_norm = optimizer.step(lr);
    window_loss += step_loss;
    ++window_steps;
    if (!std::isfinite(step_loss)) {
      fail_user("the loss became", step_loss, "at step", step + 1,
                "(lower optimizer.lr or raise optimizer.warmup_steps)");
    }
    const bool last = step + 1 == steps;
    if ((step + 1) % tc.log_every() == 0 || last) {
      const double seconds = std::chrono::duration<double>(Clock::now() - window_start).count();
      const double tokens_per_s = window_steps * static_cast<double>(B) * T * accum / seconds;
      std::printf("step %5d/%d | loss %.4f | lr %.2e | grad norm %.3f | %s tok/s | %.1f ms/step\n",
                  step + 1, steps, window_loss / window_steps, static_cast<double>(lr),
                  static_cast<double>(grad_norm), format_count(tokens_per_s).c_str(),
                  1e3 * seconds / window_steps);
      std::fflush(stdout);
      window_loss = 0;
      window_steps = 0;
      window_start = Clock::now();
    }
    if ((tc.eval_every() > 0 && (step + 1) % tc.eval_every() == 0) || last) {
      const double acc = addition_accuracy(model, task, task.test_problems());
      std::printf("eval  %5d/%d | held-out exact match %.1f%% (%d problems)\n", step + 1, steps,
                  100.0 * acc, static_cast<int>(task.test_problems().size()));
      std::fflush(stdout);
      window_start = Clock::now();  // evaluation time does not count as training throughput
    }
  }

  const std::string model_path = tc.out_dir() + "/model.loom";
  save_model_file(model_path, config_to_text(cfg), model.parameters());
  std::printf("saved %s\n", model_path.c_str());

  const int n_samples = std::min<int>(tc.samples(), static_cast<int>(task.test_problems().size()));
  if (n_samples > 0) {
    std::vector<AdditionTask::Problem> shown(task.test_problems().begin(),
                                             task.test_problems().begin() + n_samples);
    std::vector<int64_t> answers;
    addition_accuracy(model, task, shown, &answers);
    std::printf("samples (held-out problems, greedy decoding):\n");
    for (int i = 0; i < n_samples; ++i) {
      const AdditionTask::Problem& p = shown[static_cast<size_t>(i)];
      const int64_t got = answers[static_cast<size_t>(i)];
      std::printf("  %*lld + %*lld = %-*lld %s\n", task.digits(), static_cast<long long>(p.a),
                  task.digits(), static_cast<long long>(p.b), task.digits() + 1,
                  static_cast<long long>(got),
                  got == p.a + p.b ? "correct" : ("wrong, expected " + std::to_string(p.a + p.b)).c_str());
    }
  }
  std::printf("try it: build/loom generate --model %s --prompt \"%s\"\n", model_path.c_str(),
              task.decode(task.prompt_tokens({123, 456}).data(), task.prompt_length()).c_str());
  return 0;
}

}  // namespace loom
