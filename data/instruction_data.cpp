#include "data/instruction_data.h"

#include <algorithm>
#include <filesystem>
#include <string_view>

#include "core/base/check.h"
#include "data/input_stream.h"
#include "data/json.h"

namespace loom {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// Member `key` of `object` as a string; UserError naming it when missing (unless `optional`) or
// not a string.
const std::string* string_member(const JsonValue& object, std::string_view key, bool optional = false) {
  const JsonValue* value = object.find(key);
  if (value == nullptr) {
    if (optional) return nullptr;
    std::string keys;
    for (const auto& [name, member] : object.members) keys += (keys.empty() ? "'" : ", '") + name + "'";
    fail_user("the example has no \"" + std::string(key) + "\" field (it has", (keys.empty() ? "none" : keys) + ")");
  }
  if (value->kind != JsonValue::Kind::kString) {
    fail_user("the example's \"" + std::string(key) + "\" is", json_kind_name(value->kind), "but must be a string");
  }
  return &value->text;
}

std::vector<ChatMessage> chat_messages(const JsonValue& example) {
  const JsonValue* list = example.find("messages");
  if (list == nullptr) fail_user("the example has no \"messages\" field (a list of {\"role\", \"content\"} objects)");
  if (list->kind != JsonValue::Kind::kArray) {
    fail_user("the example's \"messages\" is", json_kind_name(list->kind), "but must be a list of messages");
  }
  if (list->array.empty()) fail_user("the example's \"messages\" is empty");
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < list->array.size(); ++i) {
    const JsonValue& m = list->array[i];
    if (m.kind != JsonValue::Kind::kObject) {
      fail_user("message", i, "is", json_kind_name(m.kind), "but must be an object with \"role\" and \"content\"");
    }
    const JsonValue* role = m.find("role");
    const JsonValue* content = m.find("content");
    if (role == nullptr || role->kind != JsonValue::Kind::kString) {
      fail_user("message", i, role == nullptr ? "has no \"role\"" : "has a \"role\" that is not a string");
    }
    if (role->text != "system" && role->text != "user" && role->text != "assistant") {
      fail_user("message", i, "has the role \"" + role->text + "\" but the roles are system, user and assistant");
    }
    if (content == nullptr) fail_user("message", i, "has no \"content\"");
    if (content->kind != JsonValue::Kind::kString) {
      fail_user("message", i, "has a \"content\" that is", json_kind_name(content->kind), "but must be a string");
    }
    messages.push_back({role->text, content->text});
  }
  return messages;
}

// The 1-based line of byte `offset` of `text`.
uint64_t line_of(std::string_view text, size_t offset) {
  return 1 + static_cast<uint64_t>(std::count(text.begin(), text.begin() + static_cast<ptrdiff_t>(offset), '\n'));
}

}  // namespace

const char* instruction_format_name(InstructionFormat format) {
  switch (format) {
    case InstructionFormat::kChat: return "chat";
    case InstructionFormat::kPromptCompletion: return "prompt-completion";
    case InstructionFormat::kAlpaca: return "alpaca";
  }
  return "?";
}

std::vector<ChatMessage> instruction_messages(const JsonValue& value, InstructionFormat format) {
  if (value.kind != JsonValue::Kind::kObject) {
    fail_user("the example is", json_kind_name(value.kind), "but must be a JSON object");
  }
  std::vector<ChatMessage> messages;
  switch (format) {
    case InstructionFormat::kChat: messages = chat_messages(value); break;
    case InstructionFormat::kPromptCompletion: {
      const std::string& prompt = *string_member(value, "prompt");
      messages = {{"user", prompt}, {"assistant", *string_member(value, "completion")}};
      break;
    }
    case InstructionFormat::kAlpaca: {
      std::string user = *string_member(value, "instruction");
      const std::string* input = string_member(value, "input", /*optional=*/true);
      if (input != nullptr && !input->empty()) user += "\n\n" + *input;
      messages = {{"user", user}, {"assistant", *string_member(value, "output")}};
      break;
    }
  }
  if (std::none_of(messages.begin(), messages.end(), [](const ChatMessage& m) { return m.role == "assistant"; })) {
    fail_user("the example has no assistant message to train on");
  }
  return messages;
}

InstructionReader::InstructionReader(std::vector<std::string> files, InstructionFormat format, bool skip_bad)
    : files_(std::move(files)), format_(format), skip_bad_(skip_bad) {
  if (files_.empty()) fail_user("no input files of instruction data");
  for (const std::string& file : files_) {
    std::error_code ec;
    const uintmax_t size = std::filesystem::file_size(file, ec);
    if (!ec) total_bytes_ += size;
  }
}

InstructionReader::~InstructionReader() = default;

void InstructionReader::load(const std::string& file) {
  InputStream input(file);
  std::string text;
  while (input.read(text, size_t{1} << 20) > 0) {
  }
  bytes_read_ += input.file_bytes_read();
  file_ = file;
  examples_.clear();
  next_example_ = 0;
  const size_t first = static_cast<size_t>(
      std::find_if(text.begin(), text.end(), [](char c) { return !is_space(c); }) - text.begin());
  const auto parse = [&](Example& example, const JsonValue& value) {
    try {
      example.messages = instruction_messages(value, format_);
    } catch (const UserError& e) {
      example.error = e.what();
    }
  };
  if (first < text.size() && text[first] == '[') {
    JsonValue array;
    try {
      array = json_parse(text);
    } catch (const JsonError& e) {
      fail_user(file + ":" + std::to_string(line_of(text, std::min(e.offset(), text.size()))) + ":", e.what());
    }
    for (const JsonValue& value : array.array) {
      Example& example = examples_.emplace_back();
      example.line = line_of(text, value.offset);
      parse(example, value);
    }
    return;
  }
  uint64_t line_no = 0;
  for (size_t begin = 0; begin < text.size();) {
    const size_t newline = text.find('\n', begin);
    const size_t end = newline == std::string::npos ? text.size() : newline;
    const std::string_view line = std::string_view(text).substr(begin, end - begin);
    ++line_no;
    begin = end + 1;
    if (std::all_of(line.begin(), line.end(), is_space)) continue;
    Example& example = examples_.emplace_back();
    example.line = line_no;
    try {
      parse(example, json_parse(line));
    } catch (const JsonError& e) {
      example.error = e.what();
    }
  }
}

bool InstructionReader::next(std::vector<ChatMessage>& messages) {
  while (true) {
    while (next_example_ == examples_.size()) {
      if (next_file_ == files_.size()) return false;
      load(files_[next_file_++]);
    }
    Example& example = examples_[next_example_++];
    if (example.error.empty()) {
      messages = std::move(example.messages);
      return true;
    }
    const std::string message = file_ + ":" + std::to_string(example.line) + ": " + example.error;
    if (!skip_bad_) {
      fail_user(message + " (fix the example, or pass --on-bad-example skip to leave such examples out)");
    }
    if (skipped_++ == 0) first_skipped_ = message;
  }
}

void encode_example(const Tokenizer& tokenizer, const ChatTemplate& chat_template,
                    const std::vector<ChatMessage>& messages, bool train_on_all, std::vector<int32_t>& ids,
                    std::vector<uint8_t>& mask) {
  for (const ChatSegment& segment : render_chat_segments(chat_template, messages)) {
    tokenizer.encode_into(segment.text, ids);
    mask.resize(ids.size(), train_on_all || segment.assistant ? 1 : 0);
  }
  ids.push_back(tokenizer.eos_id());
  mask.push_back(train_on_all || (!messages.empty() && messages.back().role == "assistant") ? 1 : 0);
}

}  // namespace loom
