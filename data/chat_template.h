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
//
// A third, Loom's plain template, is for models whose tokenizer has no chat template (`loom
// prepare --template plain`): a system message as "CONTENT\n\n", a user's as "### Instruction:
// \nCONTENT\n\n", an assistant's as "### Response:\nCONTENT", followed by "\n\n" when another
// message follows; the generation prompt "### Response:\n". It has no end-of-turn marker: the
// end-of-document token that `loom prepare` puts after an example ends its last answer.
#pragma once

#include <string>
#include <vector>

namespace loom {

enum class ChatTemplateFamily { kChatML, kLlama3, kPlain };

struct ChatMessage {
  std::string role;     // "system", "user", "assistant", ...
  std::string content;

  bool operator==(const ChatMessage&) const = default;
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

// A piece of a rendered chat: the pieces of render_chat_segments, end to end, are render_chat's
// text without a generation prompt. `assistant`: the piece is an assistant's answer, with the
// marker that ends its turn (<|im_end|>, <|eot_id|>; nothing in the plain template), what an
// instruction-tuned model learns to produce; the role headers and everything else are not.
struct ChatSegment {
  std::string text;
  bool assistant = false;
};

std::vector<ChatSegment> render_chat_segments(const ChatTemplate& chat_template,
                                              const std::vector<ChatMessage>& messages);

// The prompt text for `messages`; with `add_generation_prompt`, ending where the assistant's
// answer starts. Encode it with the tokenizer (whose added tokens turn the markers into their ids).
std::string render_chat(const ChatTemplate& chat_template, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt);

}  // namespace loom
