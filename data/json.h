// A small strict JSON parser (RFC 8259), for GPT-2's encoder.json and for JSONL corpora.
//
// Strict: one value and nothing after it but whitespace; no comments, trailing commas, single
// quotes, NaN, leading zeros or byte order mark; strings must be valid UTF-8 without raw control
// characters, and a \uXXXX escape of a UTF-16 surrogate must be one half of a well-formed pair.
// Every error says where, as a byte offset into the text, so that a caller can prefix the file
// and line: "corpus.jsonl:17: invalid JSON at byte offset 52: expected ':' after an object key".
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/base/check.h"

namespace loom {

// A JSON text that is malformed or not of the expected shape. what() is one phrase that names
// the byte offset (e.g. "invalid JSON at byte offset 3: ..."); offset() is that offset.
class JsonError : public UserError {
 public:
  JsonError(const std::string& message, size_t offset) : UserError(message), offset_(offset) {}
  size_t offset() const { return offset_; }

 private:
  size_t offset_;
};

struct JsonValue {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };

  Kind kind = Kind::kNull;
  size_t offset = 0;    // byte offset of the value's first character in the parsed text
  bool boolean = false;  // kBool
  std::string text;     // kString: the decoded string; kNumber: the number as written
  std::vector<JsonValue> array;                             // kArray
  std::vector<std::pair<std::string, JsonValue>> members;  // kObject, in text order, repeats kept

  // The value of a number written as an integer (no fraction or exponent) that fits int64.
  std::optional<int64_t> as_int64() const;
  // The last member named `key` of an object (RFC 8259 leaves repeats to the reader; this is
  // what most readers, Python's included, do), or nullptr.
  const JsonValue* find(std::string_view key) const;
};

// "an object", "a string", ...: for messages.
const char* json_kind_name(JsonValue::Kind kind);

// Parses a whole JSON text. Throws JsonError.
JsonValue json_parse(std::string_view text);

// The string value of member `field` of the JSON object on one JSONL line, decoded, without
// building the rest of the object (the rest is still checked). Throws JsonError when the line is
// not valid JSON, is not an object, lacks the field (the message lists the object's first keys),
// has it more than once, or has it with a value that is not a string. A trailing '\r' (a file with CRLF line ends) is whitespace.
std::string json_string_field(std::string_view line, std::string_view field);

}  // namespace loom
