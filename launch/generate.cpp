// `loom generate`: samples continuations of a prompt from a trained model file, one position per
// step through the KV-cache decoder, with temperature and top-k.
#include <cstdio>
#include <memory>
#include <optional>
#include <iostream>
#include <string>
#include <vector>

#include "checkpoints/model_file.h"
#include "launch/model_source.h"
#include "core/decoder.h"
#include "core/config.h"
#include "launch/cli.h"
#include "launch/commands.h"
#include "data/tokenizer.h"
#include "launch/run_setup.h"
#include "launch/token_run.h"

namespace loom {

const std::vector<FlagSpec>& generate_flags() {
  static const std::vector<FlagSpec> flags = {
      {"model", "PATH",
       "a model file written by `loom train`, a checkpoint directory, or a run directory (its model.loom, else "
       "its newest checkpoint) (default runs/addition/model.loom)"},
      {"tokenizer", "PATH", "tokenizer of a model trained on token shards (default: the one its config names)"},
      {"prompt", "TEXT", "text to continue, e.g. \"123+456=\" for the addition demo"},
      {"add-special-tokens", "",
       "start the prompt with the ids the tokenizer's template puts before a text (a tokenizer.json's "
       "post_processor, e.g. Llama 3's <|begin_of_text|>), for a model trained with them"},
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
  const int threads = a.get_int("threads", 0);
  check_thread_count("--threads", threads);
  set_thread_count(threads);

  LoadedModel loaded = load_trained_model(path);
  const config::RunConfig& cfg = loaded.config;
  const GPT& model = *loaded.model;
  const int T = model.config().max_seq_len;

  // Text <-> tokens: the addition task's characters, or the tokenizer of the token shards.
  const std::string prompt_text = a.get("prompt", "");
  std::optional<AdditionTask> task;
  std::unique_ptr<Tokenizer> tokenizer;
  std::vector<int32_t> prompt;
  if (cfg.data().has_tokens()) {
    const std::string tokenizer_path = a.get("tokenizer", tokenizer_path_of(cfg.data().tokens()));
    if (tokenizer_path.empty()) {
      fail_user("the model", path, "was trained on token shards whose tokenizer is not found;",
                "pass --tokenizer PATH");
    }
    tokenizer = load_tokenizer(tokenizer_path);
    if (tokenizer->vocab_size() > model.config().vocab_size) {
      fail_user("the tokenizer", tokenizer_path, "has", tokenizer->vocab_size(), "tokens but the model",
                path, "only", model.config().vocab_size, "; pass the tokenizer it was trained with");
    }
    // Only the template's prefix: generation continues the text, so nothing may close it.
    if (a.has("add-special-tokens")) prompt = tokenizer->template_prefix();
    tokenizer->encode_into(prompt_text, prompt);
  } else {
    task.emplace(make_task(cfg));
    prompt = task->encode(prompt_text);
  }
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

  const std::vector<std::vector<int32_t>> out = generate_tokens(
      model, prompt, new_tokens, samples, SamplingSettings{temperature, top_k, static_cast<uint64_t>(seed)});

  if (tokenizer) {
    for (const std::vector<int32_t>& s : out) std::printf("%s%s\n", prompt_text.c_str(), tokenizer->decode(s).c_str());
    return 0;
  }
  const bool addition_prompt = static_cast<int>(prompt.size()) == task->prompt_length() &&
                               prompt.back() == task->encode("=")[0] && new_tokens >= task->answer_length();
  for (const std::vector<int32_t>& s : out) {
    std::string text = task->decode(s.data(), static_cast<int>(s.size()));
    if (addition_prompt) {
      // The demo writes sums least-significant digit first; show it the way people read it too.
      const int64_t value = task->answer_value(s.data());
      std::printf("%s%s   (the sum, digits reversed: %s)\n", prompt_text.c_str(), text.c_str(),
                  value < 0 ? "not a number" : std::to_string(value).c_str());
    } else {
      std::printf("%s%s\n", prompt_text.c_str(), text.c_str());
    }
  }
  return 0;
}

}  // namespace loom
