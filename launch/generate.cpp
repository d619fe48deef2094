// `loom generate`: samples continuations of a prompt from a trained or imported model, one
// position per step through the KV-cache decoder, with temperature, top-k and top-p, stopping at
// the end-of-sequence token or a stop string; --chat renders the prompt as a user's message with
// the model's chat template (ChatML or Llama 3, data/chat_template.h).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <span>
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
#include "data/chat_template.h"
#include "data/tokenizer.h"
#include "launch/run_setup.h"
#include "launch/token_run.h"

namespace loom {

namespace {

// tokenizer_config.json beside a tokenizer (a directory, or a file in one).
std::string tokenizer_config_path(const std::string& tokenizer_path) {
  const std::filesystem::path p(tokenizer_path);
  const std::filesystem::path dir = std::filesystem::is_directory(p) ? p : p.parent_path();
  return (dir / "tokenizer_config.json").string();
}

}  // namespace

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
      {"top-p", "P", "sample among the most likely tokens whose probability reaches P (nucleus); 1 = all (default 1)"},
      {"stop", "TEXT", "end a sample when its text contains TEXT (repeatable); it is cut before TEXT"},
      {"ignore-eos", "", "keep generating past the tokenizer's end-of-sequence token (default: stop there)"},
      {"chat", "",
       "treat --prompt as a user's message and render it with the model's chat template (tokenizer_config.json "
       "next to the tokenizer: ChatML or Llama 3 family); the answer ends at the end-of-turn token"},
      {"system", "TEXT", "with --chat: a system message before the user's"},
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
  const float top_p = a.get_float("top-p", 1.0f);
  if (!(top_p > 0 && top_p <= 1)) fail_user("--top-p is", top_p, "but must be in (0, 1]");
  const std::vector<std::string> stop_strings = a.has("stop") ? a.flags.at("stop") : std::vector<std::string>{};
  for (const std::string& stop : stop_strings) {
    if (stop.empty()) fail_user("--stop needs a non-empty text");
  }
  if (a.has("system") && !a.has("chat")) fail_user("--system is a message of a --chat prompt; add --chat");
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
  std::vector<int32_t> stop_tokens;
  // The tokenizer: the flag's, else that of the token shards the model was trained on, else the
  // one next to the model (an imported Hugging Face model's); none: the addition task's characters.
  std::string tokenizer_path = a.get("tokenizer", "");
  if (tokenizer_path.empty() && cfg.data().has_tokens()) tokenizer_path = tokenizer_path_of(cfg.data().tokens());
  if (tokenizer_path.empty()) tokenizer_path = tokenizer_dir_of(loaded);
  if (tokenizer_path.empty() && cfg.data().has_tokens()) {
    fail_user("the model", path, "was trained on token shards whose tokenizer is not found;", "pass --tokenizer PATH");
  }
  if (!tokenizer_path.empty()) {
    tokenizer = load_tokenizer(tokenizer_path);
    if (tokenizer->vocab_size() > model.config().vocab_size) {
      fail_user("the tokenizer", tokenizer_path, "has", tokenizer->vocab_size(), "tokens but the model",
                path, "only", model.config().vocab_size, "; pass the tokenizer it was trained with");
    }
    if (a.has("chat")) {
      const ChatTemplate chat = load_chat_template(tokenizer_config_path(tokenizer_path));
      std::vector<ChatMessage> messages;
      if (a.has("system")) messages.push_back({"system", a.get("system", "")});
      messages.push_back({"user", prompt_text});
      // The rendered markers are the tokenizer's added tokens, encoded to their own ids.
      tokenizer->encode_into(render_chat(chat, messages, /*add_generation_prompt=*/true), prompt);
      const std::string end_of_turn = chat.family == ChatTemplateFamily::kLlama3 ? "<|eot_id|>" : "<|im_end|>";
      const std::vector<int32_t> ids = tokenizer->encode(end_of_turn);
      if (ids.size() != 1) {
        fail_user("the tokenizer", tokenizer_path, "has no token", end_of_turn, "that its chat template ends a turn with");
      }
      stop_tokens.push_back(ids[0]);
    } else {
      // Only the template's prefix: generation continues the text, so nothing may close it.
      if (a.has("add-special-tokens")) prompt = tokenizer->template_prefix();
      tokenizer->encode_into(prompt_text, prompt);
    }
    if (!a.has("ignore-eos")) stop_tokens.push_back(tokenizer->eos_id());
  } else {
    if (a.has("chat")) fail_user("--chat needs a model trained on token shards with a tokenizer that has a chat template");
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

  SamplingSettings settings;
  settings.temperature = temperature;
  settings.top_k = top_k;
  settings.top_p = top_p;
  settings.seed = static_cast<uint64_t>(seed);
  settings.stop_tokens = stop_tokens;
  // A sample's text, without a stop token at its end.
  auto text_of = [&](const std::vector<int32_t>& ids) {
    size_t n = ids.size();
    if (n > 0 && std::find(stop_tokens.begin(), stop_tokens.end(), ids[n - 1]) != stop_tokens.end()) --n;
    return tokenizer ? tokenizer->decode(std::span<const int32_t>(ids.data(), n))
                     : task->decode(ids.data(), static_cast<int>(n));
  };
  // Where the first stop string starts in `text` (npos: none).
  auto stop_at = [&](const std::string& text) {
    size_t first = std::string::npos;
    for (const std::string& stop : stop_strings) first = std::min(first, text.find(stop));
    return first;
  };
  if (!stop_strings.empty()) {
    settings.stop = [&](int, const std::vector<int32_t>& ids) { return stop_at(text_of(ids)) != std::string::npos; };
  }
  const std::vector<std::vector<int32_t>> out = generate_tokens(model, prompt, new_tokens, samples, settings);

  if (tokenizer) {
    for (const std::vector<int32_t>& s : out) {
      std::string text = text_of(s);
      text = text.substr(0, stop_at(text));
      std::printf("%s%s\n", a.has("chat") ? "" : prompt_text.c_str(), text.c_str());
    }
    return 0;
  }
  const bool addition_prompt = static_cast<int>(prompt.size()) == task->prompt_length() &&
                               prompt.back() == task->encode("=")[0] && new_tokens >= task->answer_length();
  for (const std::vector<int32_t>& s : out) {
    std::string text = text_of(s);
    text = text.substr(0, stop_at(text));
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
