#include "data/chat_template.h"

#include <unicode/uchar.h>

#include <string_view>

#include "core/base/check.h"
#include "core/base/file_io.h"
#include "data/json.h"
#include "data/utf8.h"

namespace loom {

namespace {

// Python's str.isspace (what Jinja's trim strips): Unicode White_Space, and the separators
// U+001C .. U+001F.
bool is_python_space(char32_t c) {
  return (c >= 0x1C && c <= 0x1F) || u_isUWhiteSpace(static_cast<UChar32>(c));
}

std::string_view trimmed(std::string_view text) {
  size_t begin = 0;
  while (begin < text.size()) {
    size_t next = begin;
    if (!is_python_space(utf8_decode_valid(text, next))) break;
    begin = next;
  }
  size_t end = text.size();
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
    size_t at = start;
    if (!is_python_space(utf8_decode_valid(text, at))) break;
    end = start;
  }
  return text.substr(begin, end - begin);
}

}  // namespace

ChatTemplateFamily chat_template_family(const std::string& chat_template, const std::string& source) {
  const bool chatml = chat_template.find("<|im_start|>") != std::string::npos;
  const bool llama3 = chat_template.find("<|start_header_id|>") != std::string::npos;
  if (chatml && !llama3) return ChatTemplateFamily::kChatML;
  if (llama3 && !chatml) return ChatTemplateFamily::kLlama3;
  fail_user(source + ": the chat_template is", chatml ? "of both the ChatML and the Llama 3 families" : "of neither",
            "family Loom renders (ChatML, with <|im_start|>, or Llama 3, with <|start_header_id|>)");
}

ChatTemplate load_chat_template(const std::string& tokenizer_config_json) {
  const std::string& file = tokenizer_config_json;
  JsonValue root;
  try {
    root = json_parse(read_file(file, "tokenizer_config.json"));
  } catch (const JsonError& e) {
    fail_user(file + ":", e.what());
  }
  const JsonValue* value = root.kind == JsonValue::Kind::kObject ? root.find("chat_template") : nullptr;
  std::string chat_template;
  if (value && value->kind == JsonValue::Kind::kString) {
    chat_template = value->text;
  } else if (value && value->kind == JsonValue::Kind::kArray) {
    for (const JsonValue& named : value->array) {
      const JsonValue* name = named.kind == JsonValue::Kind::kObject ? named.find("name") : nullptr;
      const JsonValue* text = named.kind == JsonValue::Kind::kObject ? named.find("template") : nullptr;
      if (name && name->text == "default" && text && text->kind == JsonValue::Kind::kString) chat_template = text->text;
    }
  }
  if (chat_template.empty()) fail_user(file + ": no chat_template (expected a Jinja template string)");
  ChatTemplate out;
  out.family = chat_template_family(chat_template, file);
  if (const JsonValue* bos = root.find("bos_token"); bos && bos->kind == JsonValue::Kind::kString) {
    out.bos_token = bos->text;
  } else if (bos && bos->kind == JsonValue::Kind::kObject && bos->find("content")) {
    out.bos_token = bos->find("content")->text;
  }
  return out;
}

std::vector<ChatSegment> render_chat_segments(const ChatTemplate& chat_template,
                                              const std::vector<ChatMessage>& messages) {
  for (const ChatMessage& m : messages) {
    utf8_check(m.role, "a chat message's role");
    utf8_check(m.content, "a chat message's content");
  }
  std::vector<ChatSegment> out;
  // Appends to the last piece when it is of the same kind.
  const auto add = [&](std::string_view text, bool assistant) {
    if (text.empty()) return;
    if (out.empty() || out.back().assistant != assistant) out.push_back({"", assistant});
    out.back().text += text;
  };
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const bool answer = m.role == "assistant";
    switch (chat_template.family) {
      case ChatTemplateFamily::kChatML:
        add("<|im_start|>" + m.role + "\n", false);
        add(m.content + "<|im_end|>", answer);
        add("\n", false);
        break;
      case ChatTemplateFamily::kLlama3:
        if (i == 0) add(chat_template.bos_token, false);
        add("<|start_header_id|>" + m.role + "<|end_header_id|>\n\n", false);
        add(std::string(trimmed(m.content)) + "<|eot_id|>", answer);
        break;
      case ChatTemplateFamily::kPlain:
        if (m.role == "system") {
          add(m.content + "\n\n", false);
        } else if (answer) {
          add("### Response:\n", false);
          add(m.content, true);
          if (i + 1 < messages.size()) add("\n\n", false);
        } else {
          add("### Instruction:\n" + m.content + "\n\n", false);
        }
        break;
    }
  }
  return out;
}

std::string render_chat(const ChatTemplate& chat_template, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt) {
  std::string text;
  for (const ChatSegment& segment : render_chat_segments(chat_template, messages)) text += segment.text;
  if (!add_generation_prompt) return text;
  switch (chat_template.family) {
    case ChatTemplateFamily::kChatML: text += "<|im_start|>assistant\n"; break;
    case ChatTemplateFamily::kLlama3: text += "<|start_header_id|>assistant<|end_header_id|>\n\n"; break;
    case ChatTemplateFamily::kPlain: text += "### Response:\n"; break;
  }
  return text;
}

}  // namespace loom
