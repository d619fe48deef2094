// `loom generate`: samples continuations of a prompt from a trained model file, one position per
// step through the KV-cache decoder, with temperature and top-k.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "checkpoints/model_file.h"
#include "core/decoder.h"
#include "core/rng.h"
#include "launch/cli.h"
#include "launch/commands.h"
#include "launch/run_setup.h"

namespace loom {

namespace {

const std::vector<FlagSpec>& generate_flags() {
  static const std::vector<FlagSpec> flags = {
      {"model", "PATH", "model file written by `loom train` (default runs/addition/model.loom)"},
      {"prompt", "TEXT", "text to continue, e.g. \"123+456=\" for the addition demo"},
      {"max-new-tokens", "N", "tokens to generate (default: up to the model's seq_len)"},
      {"temperature", "T", "softmax temperature; 0 = greedy (default 0)"},
      {"top-k", "K", "sample among the K most likely tokens; 0 = all (default 0)"},
      {"num-samples", "N", "independent samples to draw (default 1)"},
      {"seed", "S", "random seed for sampling (default 0)"},
      {"threads", "N", "CPU threads; 0 = every core (default 0)"},
      {"help", "", "show this help"},
  };
  return flags;
}

}  // namespace

int run_generate(const std::vector<std::string>& args) {
  ParsedArgs a = parse_args("generate", args, generate_flags());
  if (a.has("help")) {
    std::cout << usage_text("loom generate [--model PATH] --prompt TEXT [options]",
                            "Continues a prompt with a trained model, using a KV cache.",
                            generate_flags());
    return 0;
  }
  if (!a.positionals.empty()) fail_user("unexpected argument '" + a.positionals[0] + "' (see loom generate --help)");
  if (!a.has("prompt")) fail_user("loom generate needs --prompt TEXT (see loom generate --help)");
  const std::string path = a.get("model", "runs/addition/model.loom");
  const float temperature = a.get_float("temperature", 0.0f);
  const int top_k = a.get_int("top-k", 0);
  const int samples = a.get_int("num-samples", 1);
  const int seed = a.get_int("seed", 0);
  if (!(temperature >= 0)) fail_user("--temperature is", temperature, "but must be >= 0");
  if (top_k < 0) fail_user("--top-k is", top_k, "but must be >= 0");
  if (samples <= 0) fail_user("--num-samples is", samples, "but must be positive");
  set_thread_count(a.get_int("threads", 0));

  ModelFile file = load_model_file(path);
  config::RunConfig cfg = parse_config_text(file.config_text, path + " (stored config)");
  validate_config(cfg);
  AdditionTask task = make_task(cfg);
  GPT model(model_config_of(cfg));
  copy_into_model(file, path, model);
  const int V = model.config().vocab_size, T = model.config().max_seq_len;

  std::vector<int32_t> prompt = task.encode(a.get("prompt", ""));
  if (prompt.empty()) fail_user("--prompt is empty; give at least one token");
  if (static_cast<int>(prompt.size()) > T) {
    fail_user("--prompt has", prompt.size(), "tokens but the model sees at most", T, "positions");
  }
  // The last generated token is never fed back, so a full window of T positions yields one more.
  const int room = T - static_cast<int>(prompt.size()) + 1;
  const int new_tokens = a.get_int("max-new-tokens", room);
  if (new_tokens <= 0 || new_tokens > room) {
    fail_user("--max-new-tokens is", new_tokens, "but must be in 1 ..", room,
              "(the model's", T, "positions, minus the prompt's", prompt.size(), ", plus one)");
  }

  // All samples decode together as one batch; each has its own random stream.
  Decoder decoder(model, samples);
  std::vector<int32_t> column(static_cast<size_t>(samples));
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(samples));
  const float* logits = nullptr;
  for (int32_t tok : prompt) {
    std::fill(column.begin(), column.end(), tok);
    logits = decoder.step(column.data());
  }
  for (int t = 0; t < new_tokens; ++t) {
    for (int s = 0; s < samples; ++s) {
      CounterRng rng(static_cast<uint64_t>(seed), stream_id_of("generate.sample") + static_cast<uint64_t>(s));
      int32_t tok = sample_token(logits + static_cast<int64_t>(s) * V, V, temperature, top_k,
                                 rng.uniform(static_cast<uint64_t>(t)));
      out[static_cast<size_t>(s)].push_back(tok);
      column[static_cast<size_t>(s)] = tok;
    }
    if (t + 1 < new_tokens) logits = decoder.step(column.data());
  }

  const bool addition_prompt = static_cast<int>(prompt.size()) == task.prompt_length() &&
                               prompt.back() == task.encode("=")[0] && new_tokens >= task.answer_length();
  for (const std::vector<int32_t>& s : out) {
    std::string text = task.decode(s.data(), static_cast<int>(s.size()));
    if (addition_prompt) {
      // The demo writes sums least-significant digit first; show it the way people read it too.
      const int64_t value = task.answer_value(s.data());
      std::printf("%s%s   (the sum, digits reversed: %s)\n", a.get("prompt", "").c_str(), text.c_str(),
                  value < 0 ? "not a number" : std::to_string(value).c_str());
    } else {
      std::printf("%s%s\n", a.get("prompt", "").c_str(), text.c_str());
    }
  }
  return 0;
}

}  // namespace loom
