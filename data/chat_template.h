// Chat prompts: a list of {role, content} messages rendered as text the way a model's chat template
// (tokenizer_config.json's `chat_template`, a Jinja template) renders them, for the two families
// most models use:
//   - ChatML (Qwen2, SmolLM2, many others): "<|im_start|>ROLE\nCONTENT<|im_end|>\n" per message;
//     the generation prompt "<|im_start|>assistant\n";
//   - Llama 3: bos first, then "<|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|>" per
//     message with CONTENT trimmed of surrounding whitespace (Jinja's `trim`); the generation
//     prompt "<|start_header_id|>assistant<|end_header_id|>\n\n".
// Loom does not run Jinja: it recognises the family by the template's markers and renders the
// family's canonical template (the one the tests compare, through jinja2, with this code). What a
// particular model's template adds to it (a default system message, tool calls, a knowledge-cutoff
// date) is not rendered.
#pragma once

#include <string>
#include <vector>

namespace loom {

enum class ChatTemplateFamily { kChatML, kLlama3 };

struct ChatMessage {
  std::string role;     // "system", "user", "assistant", ...
  std::string content;
};

struct ChatTemplate {
  ChatTemplateFamily family = ChatTemplateFamily::kChatML;
  std::string bos_token;  // Llama 3 puts it first (tokenizer_config.json's bos_token)
};

// The family of a Jinja `chat_template`. Throws UserError naming `source` when it is neither.
ChatTemplateFamily chat_template_family(const std::string& chat_template, const std::string& source);

// Reads `chat_template` and `bos_token` from tokenizer_config.json. Throws UserError naming the
// file when it has no chat_template (a string; a list of named templates takes the one named
// "default") or one of neither family.
ChatTemplate load_chat_template(const std::string& tokenizer_config_json);

// The prompt text for `messages`; with `add_generation_prompt`, ending where the assistant's
// answer starts. Encode it with the tokenizer (whose added tokens turn the markers into their ids).
std::string render_chat(const ChatTemplate& chat_template, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt);

}  // namespace loom
